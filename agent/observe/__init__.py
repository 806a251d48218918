"""What the agent reports about itself: per-turn traces (`traces`) and their statistics
(`trace_stats`, shared with the reports in scripts/ and testing/), Prometheus metrics (`metrics`),
and the watch that ends a process whose engine thread died (`engine_watch`)."""
