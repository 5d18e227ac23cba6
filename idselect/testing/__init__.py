"""Fixtures for verifying the hooks, apart from the library core (``import idselect`` does
not import them): tiny random-weight models built from configs (``tiny``), prompts for them in
every family (``cases``), oracles that never use the hooks (``oracles``) and model folders for
engines that load a path (``model_dirs``). The test suite and ``idselect.patch``'s self-check
on transformers releases outside the verified range both use them."""
