"""Research tools: the internal-covariate-shift probe, the small-scale reproduction's plan and
tables, and plots."""
