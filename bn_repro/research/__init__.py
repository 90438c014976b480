"""Research tools: the small-scale reproduction's plan, tables, figures and report, and plots."""
