"""Single-cell crops: geometry, the sharded on-disk store and the streaming datasets over it."""
