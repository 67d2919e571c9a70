"""Input and output: points in, results out (text, Arrow, terminal tables, plots), the
pipeline between them."""
