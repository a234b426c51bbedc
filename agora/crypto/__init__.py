"""Keys and signatures, Merkle trees: the cryptography every layer below the rules uses."""
