/* Model shapes for generated checkpoints. Every preset keeps the format's rules (docs/MODEL.md
 * §9): multiples of 128 for FP8 activation groups, index_head_dim 128, rope dim 64,
 * expert groups of >= 2 with topk_group * group size >= experts per token. */
#include "presets.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void common(struct dsd_model_config *c)
{
    snprintf(c->architecture, sizeof c->architecture, "DeepseekV32ForCausalLM");
    c->norm_topk_prob = true;
    c->routed_scaling_factor = 2.5;
    c->rms_norm_eps = 1e-6;
    c->qk_rope_head_dim = 64;
    c->index_head_dim = 128;
    c->max_position_embeddings = 163840;
    c->rope = (struct dsd_rope_config){
        .type = DSD_ROPE_YARN, .theta = 10000.0, .factor = 40.0, .original_max_position = 4096,
        .beta_fast = 32.0, .beta_slow = 1.0, .mscale = 1.0, .mscale_all_dim = 1.0,
    };
    c->bos_token_id = 0;
    c->eos_token_id = 1;
    c->fp8_weights = true;
    c->act_scale_ue8m0 = true;
    c->num_nextn_predict_layers = 1;
}

int mkmodel_preset(const char *name, struct dsd_model_config *c)
{
    memset(c, 0, sizeof *c);
    common(c);
    if (strcmp(name, "tiny") == 0) {
        /* Every path at toy size: 2 dense + 2 MoE layers and an MoE MTP layer; 16 experts in
         * 4 groups, topk_group 2; index_topk 24 so prompts past 24 tokens are truly sparse. */
        c->vocab_size = 2048;
        c->hidden_size = 256;
        c->intermediate_size = 512;
        c->moe_intermediate_size = 128;
        c->num_hidden_layers = 4;
        c->first_k_dense_replace = 2;
        c->n_routed_experts = 16;
        c->n_shared_experts = 1;
        c->num_experts_per_tok = 4;
        c->n_group = 4;
        c->topk_group = 2;
        c->num_attention_heads = 4;
        c->q_lora_rank = 256;
        c->kv_lora_rank = 256;
        c->qk_nope_head_dim = 64;
        c->v_head_dim = 64;
        c->index_n_heads = 8;
        c->index_topk = 24;
    } else if (strcmp(name, "small") == 0) {
        /* The real cache geometry (kv_lora 512 + rope 64 = the 656-byte FP8 entry) at a size a
         * laptop runs: ~250 MB with 6 layers. */
        c->vocab_size = 16384;
        c->hidden_size = 1024;
        c->intermediate_size = 2816;
        c->moe_intermediate_size = 256;
        c->num_hidden_layers = 6;
        c->first_k_dense_replace = 2;
        c->n_routed_experts = 32;
        c->n_shared_experts = 1;
        c->num_experts_per_tok = 8;
        c->n_group = 8;
        c->topk_group = 4;
        c->num_attention_heads = 16;
        c->q_lora_rank = 512;
        c->kv_lora_rank = 512;
        c->qk_nope_head_dim = 128;
        c->v_head_dim = 128;
        c->index_n_heads = 16;
        c->index_topk = 256;
    } else if (strcmp(name, "full-dims") == 0) {
        /* DeepSeek V3.2 itself (docs/MODEL.md §1); use --layers to keep the file size sane. */
        c->vocab_size = 129280;
        c->hidden_size = 7168;
        c->intermediate_size = 18432;
        c->moe_intermediate_size = 2048;
        c->num_hidden_layers = 61;
        c->first_k_dense_replace = 3;
        c->n_routed_experts = 256;
        c->n_shared_experts = 1;
        c->num_experts_per_tok = 8;
        c->n_group = 8;
        c->topk_group = 4;
        c->num_attention_heads = 128;
        c->q_lora_rank = 1536;
        c->kv_lora_rank = 512;
        c->qk_nope_head_dim = 128;
        c->v_head_dim = 128;
        c->index_n_heads = 64;
        c->index_topk = 2048;
    } else {
        return -EINVAL;
    }
    return 0;
}
