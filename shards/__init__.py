"""The shard seam's reading side: `unisim.shards.reader` reads what a conversion wrote (`schemas/` defines it)."""
