"""lmms-eval plugin: evaluate LVLMs with ID-Selection on lmms-eval's benchmarks.

Install from a clone with ``pip install --no-build-isolation -e ".[lmms]"``; lmms-eval then finds the models registered in
``idselect.lmms.manifests`` (entry-point group ``lmms_eval.models``)::

    lmms-eval --model idselect --model_args pretrained=PATH,keep=64 --tasks textvqa_val

``idselect.lmms.options`` (model_args parsing, run statistics) needs no lmms-eval;
``idselect.lmms.models`` holds the lmms-eval model classes. See docs/evaluation.md.
"""
