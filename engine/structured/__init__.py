"""DarwinLM-style structured pruning: level database, training-aware search, smaller-model export."""
