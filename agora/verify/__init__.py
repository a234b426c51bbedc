"""Verifiable inference: evidence that a miner ran the model it claims, on the prompt it was given.

Layers, cheapest first (see docs/verification.md):

- ``toploc``: activation proofs for text generation after TOPLOC (arXiv 2501.16007); the miner
  ships a few hundred bytes per chunk of tokens, a validator checks them with one prefill pass.
- spot checks: validators audit a fraction p of organic receipts, chosen by a block hash the miner
  could not know when it answered (``agora.protocol.audit``).
- disputes: a proven mismatch goes to the ledger, validators holding a stake majority confirm, the
  miner is slashed (``agora.protocol.disputes``).
- zero-knowledge proofs for small classifiers with EZKL (``agora.zk``).
"""
