"""Applications: the command line, the demo, benchmarks and explanation rendering."""
