/* Greedy decode loop for the llama.cpp runtime (runtimes/llamacpp_runtime.py).
 *
 * Why C: a decode step of the tiny default model takes ~0.3 ms, and each Python round trip per
 * token (fill the batch, llama_decode, llama_sampler_sample, end-of-generation check) costs
 * 20-35 us because the decode evicts the interpreter from the CPU caches; that is the 7-10% the
 * bench's llama.cpp overhead ratio measured. This loop makes the same calls in the same order as
 * the Python fallback (LlamaCppRuntime._decode_loop_python), once per generation.
 *
 * The llama.cpp functions arrive as pointers taken from the library Python already loaded, so this
 * file needs no llama.cpp headers and cannot bind to a second copy of libllama. The batch is the
 * runtime's own llama_batch (allocated with llama_batch_init), passed by pointer.
 */
#include <stdbool.h>
#include <stdint.h>

typedef int32_t llama_token;
typedef int32_t llama_pos;
typedef int32_t llama_seq_id;

/* the layout of llama.h's struct llama_batch */
struct llama_batch {
    int32_t n_tokens;
    llama_token *token;
    float *embd;
    llama_pos *pos;
    int32_t *n_seq_id;
    llama_seq_id **seq_id;
    int8_t *logits;
};

typedef int32_t (*decode_fn)(void *ctx, struct llama_batch batch);
typedef llama_token (*sample_fn)(void *smpl, void *ctx, int32_t idx);
typedef bool (*is_eog_fn)(const void *vocab, llama_token token);

/* Generate greedily after a prefill whose sampled next token is `first` and whose KV cache holds
 * `n_past` positions. Writes up to `max_new` tokens (first included) to `out`; stops after an
 * end-of-generation token or when the context is full. Returns the number written, or
 * -(1 + written) with the failing llama_decode status in *status when a decode fails. */
int32_t allava_greedy_loop(decode_fn decode, sample_fn sample, is_eog_fn is_eog, void *ctx, void *smpl,
                           const void *vocab, struct llama_batch *batch, llama_token first, int32_t n_past,
                           int32_t n_ctx, int32_t max_new, llama_token *out, int32_t *status) {
    int32_t n = 0;
    llama_token tok = first;
    *status = 0;
    if (max_new < 1) {
        return 0;
    }
    out[n++] = tok;
    batch->n_tokens = 1;
    batch->n_seq_id[0] = 1;
    batch->seq_id[0][0] = 0;
    batch->logits[0] = 1;
    while (n < max_new && !is_eog(vocab, tok)) {
        if (n_past + 1 >= n_ctx) {
            break;
        }
        batch->token[0] = tok;
        batch->pos[0] = n_past;
        int32_t rc = decode(ctx, *batch);
        if (rc != 0) {
            *status = rc;
            return -(1 + n);
        }
        tok = sample(smpl, ctx, -1);
        n_past++;
        out[n++] = tok;
    }
    return n;
}

/* An is_eog stand-in that never stops: fixed-length generations for latency measurement, as
 * llama-bench times a set number of tokens whatever the model would have ended with. */
bool allava_never_eog(const void *vocab, llama_token token) {
    (void) vocab;
    (void) token;
    return false;
}
