// The page's logic: load the ONNX export folder (served at /model/) with transformers.js' web build and
// onnxruntime-web's WASM backend, then answer a question about an image the way transformers.js users
// call a LLaVA model: messages -> the folder's chat template -> processor(image, text) -> greedy generate.
//
// URL parameters: model (folder URL, default /model/), dtype (default fp32), threads (WASM threads;
// default: onnxruntime-web's choice), max_new_tokens (default 32). After each answer the page keeps
// window.allavaLast = {answer, prompt, input_ids, token_ids, pixel_shape, pixel_values} for tests
// (tests/examples/test_browser_page.py) and for anyone checking it in the developer console.

import { AutoProcessor, LlavaForConditionalGeneration, RawImage, env } from '@huggingface/transformers';

import { useLlavaImagePreprocessing } from './llava_image.js';

const params = new URLSearchParams(location.search);
const modelUrl = new URL(params.get('model') ?? '/model/', location.href);
const dtype = params.get('dtype') ?? 'fp32';
const maxNewTokens = Number.parseInt(params.get('max_new_tokens') ?? '32', 10);

const $ = (id) => document.getElementById(id);
const status = (text) => { $('status').textContent = text; };

// Every file from this server: the model folder (no hub, no browser cache) and onnxruntime-web's WASM
// files (transformers.js would otherwise fetch them from cdn.jsdelivr.net).
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.useBrowserCache = false;
const modelPath = modelUrl.pathname.replace(/\/+$/, '');
env.localModelPath = modelPath.slice(0, modelPath.lastIndexOf('/') + 1) || '/';
const modelId = modelPath.slice(modelPath.lastIndexOf('/') + 1);
const ortDist = new URL('/vendor/onnxruntime-web/dist/', location.href).href;
env.backends.onnx.wasm.wasmPaths = {
    mjs: `${ortDist}ort-wasm-simd-threaded.asyncify.mjs`,
    wasm: `${ortDist}ort-wasm-simd-threaded.asyncify.wasm`,
};
if (params.has('threads')) env.backends.onnx.wasm.numThreads = Number.parseInt(params.get('threads'), 10);

let processor;
let model;

async function load() {
    const t0 = performance.now();
    processor = useLlavaImagePreprocessing(await AutoProcessor.from_pretrained(modelId));
    model = await LlavaForConditionalGeneration.from_pretrained(modelId, { dtype, device: 'wasm' });
    status(`model ${modelUrl.pathname} (${dtype}, WASM) loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    $('ask').disabled = false;
}

/** One answer: the same steps as tests/export/transformersjs_generate.mjs in node. */
async function answer(image, question) {
    const messages = [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: question }] }];
    const prompt = processor.apply_chat_template(messages, { add_generation_prompt: true });
    const inputs = await processor(image, prompt);
    const output = await model.generate({ ...inputs, max_new_tokens: maxNewTokens, do_sample: false });
    const inputIds = Array.from(inputs.input_ids.data, Number);
    const tokenIds = Array.from(output.data, Number).slice(inputIds.length);
    const text = processor.tokenizer.decode(tokenIds, { skip_special_tokens: true }).trim();
    return {
        answer: text, prompt, input_ids: inputIds, token_ids: tokenIds,
        pixel_shape: inputs.pixel_values.dims, pixel_values: Array.from(inputs.pixel_values.data),
    };
}

$('image').addEventListener('change', () => {
    const file = $('image').files[0];
    if (file) $('preview').src = URL.createObjectURL(file);
});

$('ask').addEventListener('click', async () => {
    const file = $('image').files[0];
    if (!file) {
        status('choose an image first');
        return;
    }
    $('ask').disabled = true;
    $('answer').dataset.state = 'running';
    $('answer').textContent = '…';
    try {
        const t0 = performance.now();
        const image = await RawImage.fromBlob(file);
        const result = await answer(image, $('question').value);
        window.allavaLast = { ...result, image: { width: image.width, height: image.height, name: file.name } };
        $('answer').textContent = result.answer || '(empty answer)';
        status(`${image.width}x${image.height} image, ${result.token_ids.length} tokens in `
               + `${((performance.now() - t0) / 1000).toFixed(2)} s`);
        $('answer').dataset.state = 'done';
    } catch (err) {
        $('answer').textContent = `error: ${err?.message ?? err}`;
        $('answer').dataset.state = 'error';
        console.error(err);
    } finally {
        $('ask').disabled = false;
    }
});

load().catch((err) => {
    status(`could not load the model: ${err?.message ?? err}`);
    $('answer').dataset.state = 'error';
    console.error(err);
});
