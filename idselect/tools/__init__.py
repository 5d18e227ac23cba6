"""Tools around the library core, apart from it (``import idselect`` does not import them):
the demo (``demo``), the accuracy harness (``evaluate``), the FLOPs model (``flops``), the op
microbenchmark (``benchmark``), the real models' architecture numbers they share (``shapes``),
the command line's argument types (``cli_args``) and the vLLM release record's fingerprints
(``vllm_fingerprint``, ``python -m idselect.tools.vllm_fingerprint``).
``python -m idselect`` runs them."""
