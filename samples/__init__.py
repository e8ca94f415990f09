"""Built-in sample data written in official release formats (the tabletop world; RLDS/TFDS writer)."""
