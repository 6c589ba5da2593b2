"""CC-SAM and deep long-tailed recognition."""
