"""Fixtures for verifying the hooks, apart from the library core (``import idselect`` does
not import them): prompts for tiny models of every family (``cases``) and oracles that never
use the hooks (``oracles``). The test suite and ``idselect.patch``'s self-check on transformers
releases outside the verified range both use them."""
