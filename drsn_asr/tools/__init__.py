"""What measures and shows a model: evaluation and its reports, the benchmark, the shrinkage explanation, export."""
