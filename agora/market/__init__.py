"""The compute marketplace's services: the provider agent, the tenant client and their CLI.

    agora provider start --dev-key carol --offer "cpu=2,mem=8GiB,gpu=0,price=0.02/h"
    agora market order --dev-key alice --need "cpu=1,mem=2GiB" --max-price 0.05/h --deposit 1

The rules they drive are in :mod:`agora.protocol.market`; the design is in ``docs/market.md``.
Importing this package imports nothing heavy: the sandbox launcher runs from it.
"""
