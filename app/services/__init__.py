"""Domain operations on jobs and items; each function commits nothing unless it says so."""
