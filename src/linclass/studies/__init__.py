"""The lecture's studies: W vs 2W, the loss questions, the hard cases, the regularization path, the report."""
