// LLaVA image preparation for transformers.js, identical to Python transformers' LlavaImageProcessor.
//
// Why this file exists: transformers.js 4.3.2 has no LlavaImageProcessor. For a LLaVA folder it falls
// back to its base ImageProcessor, which resizes the shortest edge and centre-crops (the image's sides
// are cut off instead of padded to a square with the mean colour), and whose resize is not Pillow's
// (sharp's affine transform in node, the canvas' drawImage in browsers). Only an image already at the
// model's native square size (96 px for the tiny default, 336 px for ALLaVA-3B) goes through it as the
// model was trained. This module does the steps transformers does before rescaling (pad to square with
// int(mean * 255), Pillow's antialiased bicubic resize in Pillow's own fixed-point arithmetic, centre
// crop) in plain JavaScript, so node and every browser give the same bytes as Pillow; the processor
// then only rescales and normalises, which it does exactly as Python does.
//
// Use it once per processor, then call the processor as usual:
//
//   import { useLlavaImagePreprocessing } from './llava_image.js';
//   const processor = await AutoProcessor.from_pretrained(folder);
//   useLlavaImagePreprocessing(processor);   // processor(image, text) now prepares images as in training
//
// No imports: the function takes the RawImage it is given and returns one of the same class, so the
// same file serves transformers.js' node and web builds. tests/export/test_onnx_transformersjs.py and
// tests/examples/test_browser_page.py hold its pixel values to Python's within 1e-3 (measured ~2.4e-7).

const PRECISION_BITS = 32 - 8 - 2; // Pillow's Resample.c: 8-bit images are filtered in 22-bit fixed point
const ONE = 2 ** PRECISION_BITS;

function bicubicFilter(x) {
    const a = -0.5;
    x = Math.abs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

function bilinearFilter(x) {
    x = Math.abs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

// PIL resample codes (preprocessor_config.json's "resample") -> [filter, support]
const FILTERS = { 2: [bilinearFilter, 1.0], 3: [bicubicFilter, 2.0] };

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc: per output pixel, its first input index, count, weights. */
function coefficients(inSize, outSize, filter, filterSupport) {
    const scale = inSize / outSize;
    const filterscale = Math.max(scale, 1.0);
    const support = filterSupport * filterscale;
    const ksize = Math.ceil(support) * 2 + 1;
    const bounds = new Int32Array(outSize * 2);
    const kk = new Float64Array(outSize * ksize);
    const w = new Float64Array(ksize);
    for (let xx = 0; xx < outSize; xx++) {
        const center = (xx + 0.5) * scale;
        const ss = 1.0 / filterscale;
        const xmin = Math.max(0, Math.trunc(center - support + 0.5));
        const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
        let ww = 0.0;
        for (let x = 0; x < xmax; x++) {
            w[x] = filter((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        for (let x = 0; x < xmax; x++) {
            const k = ww !== 0.0 ? w[x] / ww : w[x];
            kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
        }
        bounds[xx * 2] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    return { ksize, bounds, kk };
}

function clip8(v) {
    const q = Math.floor(v / ONE);
    return q < 0 ? 0 : q > 255 ? 255 : q;
}

/** One separable pass of Pillow's resample over interleaved 8-bit pixels (horizontal or vertical). */
function resamplePass(src, width, height, channels, outSize, horizontal, filter, support) {
    const inSize = horizontal ? width : height;
    const { ksize, bounds, kk } = coefficients(inSize, outSize, filter, support);
    const outW = horizontal ? outSize : width;
    const outH = horizontal ? height : outSize;
    const out = new Uint8ClampedArray(outW * outH * channels);
    const sums = new Float64Array(channels);
    for (let y = 0; y < outH; y++) {
        for (let x = 0; x < outW; x++) {
            const o = horizontal ? x : y;
            const xmin = bounds[o * 2];
            const n = bounds[o * 2 + 1];
            sums.fill(2 ** (PRECISION_BITS - 1)); // rounding
            for (let i = 0; i < n; i++) {
                const k = kk[o * ksize + i];
                const p = horizontal ? (y * width + xmin + i) * channels : ((xmin + i) * width + x) * channels;
                for (let c = 0; c < channels; c++) sums[c] += src[p + c] * k;
            }
            const q = (y * outW + x) * channels;
            for (let c = 0; c < channels; c++) out[q + c] = clip8(sums[c]);
        }
    }
    return out;
}

/** Pillow's Image.resize(size, resample) for 8-bit images: horizontal pass, then vertical (each only if needed). */
export function pillowResize(data, width, height, channels, outW, outH, resample = 3) {
    const entry = FILTERS[resample];
    if (!entry) throw new Error(`llava_image.js: resample ${resample} is not implemented (2 bilinear, 3 bicubic)`);
    const [filter, support] = entry;
    let cur = data;
    let w = width;
    if (outW !== width) {
        cur = resamplePass(cur, w, height, channels, outW, true, filter, support);
        w = outW;
    }
    if (outH !== height) cur = resamplePass(cur, w, height, channels, outH, false, filter, support);
    return cur;
}

/**
 * The image LlavaImageProcessor (transformers) feeds to rescale/normalise, as a RawImage of the same class:
 * RGB, padded to a square with int(mean * 255) (do_pad), resized so the shortest edge is size.shortest_edge
 * (do_resize, Pillow's filter), centre-cropped to crop_size (do_center_crop).
 * @param {{data: Uint8ClampedArray|Uint8Array, width: number, height: number, channels: number, rgb: Function}} image
 * @param {object} config the parsed preprocessor_config.json (processor.image_processor.config)
 */
export function prepareLlavaImage(image, config) {
    const rgb = image.rgb(); // drops alpha as PIL's convert("RGB") does
    let data = rgb.data;
    let width = rgb.width;
    let height = rgb.height;
    const C = 3;
    if (config.do_pad && width !== height) {
        const side = Math.max(width, height);
        const fill = config.image_mean.map((m) => Math.trunc(m * 255));
        const padded = new Uint8ClampedArray(side * side * C);
        for (let i = 0; i < side * side; i++) for (let c = 0; c < C; c++) padded[i * C + c] = fill[c];
        const left = width < side ? Math.floor((side - width) / 2) : 0;
        const top = height < side ? Math.floor((side - height) / 2) : 0;
        for (let y = 0; y < height; y++) {
            padded.set(data.subarray(y * width * C, (y + 1) * width * C), ((y + top) * side + left) * C);
        }
        data = padded;
        width = height = side;
    }
    if (config.do_resize ?? true) {
        const size = config.size ?? {};
        let outW;
        let outH;
        if (size.shortest_edge !== undefined) {
            const s = size.shortest_edge;
            const [short, long] = width <= height ? [width, height] : [height, width];
            const newLong = Math.trunc((s * long) / short);
            [outW, outH] = width <= height ? [s, newLong] : [newLong, s];
        } else {
            [outW, outH] = [size.width, size.height];
        }
        if (outW !== width || outH !== height) {
            data = pillowResize(data, width, height, C, outW, outH, config.resample ?? 3);
            width = outW;
            height = outH;
        }
    }
    if (config.do_center_crop && config.crop_size) {
        const { height: ch, width: cw } = config.crop_size;
        if (ch !== height || cw !== width) {
            const top = Math.floor((height - ch) / 2);
            const left = Math.floor((width - cw) / 2);
            const cropped = new Uint8ClampedArray(ch * cw * C);
            for (let y = 0; y < ch; y++) {
                for (let x = 0; x < cw; x++) {
                    const sy = y + top;
                    const sx = x + left;
                    if (sy < 0 || sx < 0 || sy >= height || sx >= width) continue; // transformers pads with 0
                    for (let c = 0; c < C; c++) cropped[(y * cw + x) * C + c] = data[(sy * width + sx) * C + c];
                }
            }
            data = cropped;
            width = cw;
            height = ch;
        }
    }
    return new image.constructor(data, width, height, C);
}

/**
 * Make ``processor(image, text)`` prepare images as LlavaImageProcessor does: every image goes through
 * prepareLlavaImage first, so transformers.js' own resize and crop see the native size and do nothing.
 * Returns the processor (idempotent).
 */
export function useLlavaImagePreprocessing(processor) {
    const ip = processor.image_processor;
    if (ip.__llavaPrepared) return processor;
    const preprocess = ip.preprocess.bind(ip);
    ip.preprocess = (image, options) => preprocess(prepareLlavaImage(image, ip.config), options);
    ip.__llavaPrepared = true;
    return processor;
}
