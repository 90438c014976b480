"""How work is spread over devices and processes: the device map, start-up, a local launcher."""
