"""Task heads: the output layer, its loss and its metrics, one class per task."""
