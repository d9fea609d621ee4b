"""Tasks: data + loss + metrics for one kind of problem. A task knows nothing about pruning."""
