#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers' DeepSeek V3.2 for a deepseekd checkpoint.

Runs on a machine with PyTorch and transformers >= 5.11 (the project's GPU host has 5.17):

    python3 tools/golden/golden.py --model DIR --prompts tools/golden/prompts_tiny.json --out OUTDIR

For every prompt it runs DeepseekV32ForCausalLM in fp32 eager mode on the CPU (no TF32, no
fused kernels) over the whole prompt and writes OUTDIR/<name>.logits.npy ([len, vocab]
float32) and OUTDIR/<name>.topk.npy (the indexer's selections, [layers, len, index_topk],
-1 for none, as float32), plus OUTDIR/golden.json: the prompts, the checkpoint's file
hashes (xxh64, the same hash the C tests compute), library versions and the date.

FP8 weights are dequantized exactly as docs/MODEL.md §7.1 says: fp8 value times its 128x128
block's weight_scale_inv, in fp32. Routed experts are packed into transformers' fused
gate_up_proj / down_proj. The MTP layer (index num_hidden_layers) is not part of
transformers' model and is skipped.
"""
import argparse
import datetime
import json
import os
import sys

import numpy as np
import torch


def checkpoint_hash(model_dir, files):
    """xxh64 over every tensor in name order: name, a NUL byte, the raw data bytes. It names
    the checkpoint's content independently of how a writer formats the headers; the C tests
    compute the same (tests/model/test_golden.c)."""
    import struct
    import xxhash
    entries = []
    for fn in files:
        with open(os.path.join(model_dir, fn), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            base = 8 + n
            for name, info in header.items():
                if name != "__metadata__":
                    entries.append((name, fn, base + info["data_offsets"][0], base + info["data_offsets"][1]))
    h = xxhash.xxh64(seed=0)
    for name, fn, begin, end in sorted(entries):
        with open(os.path.join(model_dir, fn), "rb") as f:
            f.seek(begin)
            h.update(name.encode() + b"\0")
            h.update(f.read(end - begin))
    return h.hexdigest()


def load_checkpoint(model_dir):
    from safetensors.torch import load_file
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for fn in files:
        tensors.update(load_file(os.path.join(model_dir, fn)))
    return tensors, files


def dequantize(weight, scale):
    """fp8 [rows, cols] times its [ceil(rows/128), ceil(cols/128)] block scales, in fp32."""
    rows, cols = weight.shape
    s = scale.float().repeat_interleave(128, 0).repeat_interleave(128, 1)[:rows, :cols]
    return weight.float() * s


def build_config(cfg):
    from transformers import DeepseekV32Config
    rs = cfg.get("rope_scaling") or {}
    rope = {"rope_type": rs.get("type", rs.get("rope_type", "default")), "rope_theta": cfg["rope_theta"]}
    for k in ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
        if k in rs:
            rope[k] = rs[k]
    keys = ["vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "n_shared_experts", "n_routed_experts",
            "routed_scaling_factor", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "v_head_dim",
            "qk_nope_head_dim", "n_group", "topk_group", "num_experts_per_tok", "norm_topk_prob", "hidden_act",
            "max_position_embeddings", "rms_norm_eps", "bos_token_id", "eos_token_id", "tie_word_embeddings",
            "attention_bias", "index_topk", "index_head_dim", "index_n_heads", "first_k_dense_replace"]
    kw = {k: cfg[k] for k in keys if k in cfg}
    try:
        conf = DeepseekV32Config(rope_parameters=rope, **kw)
    except TypeError:
        conf = DeepseekV32Config(rope_scaling=rs, rope_theta=cfg["rope_theta"], **kw)
    conf._attn_implementation = "eager"
    return conf


def state_dict_for(tensors, cfg):
    n_main = cfg["num_hidden_layers"]
    E = cfg["n_routed_experts"]
    out = {}
    for name, t in tensors.items():
        if name.endswith(".weight_scale_inv"):
            continue
        if name.startswith("model.layers."):
            if int(name.split(".")[2]) >= n_main:
                continue    # the MTP layer
        if t.dtype == torch.float8_e4m3fn:
            t = dequantize(t, tensors[name[: -len(".weight")] + ".weight_scale_inv"])
        out[name] = t.float()
    # Fuse routed experts the way transformers stores them.
    for layer in range(cfg["first_k_dense_replace"], n_main):
        p = f"model.layers.{layer}.mlp.experts"
        gate_up, down = [], []
        for e in range(E):
            g = out.pop(f"{p}.{e}.gate_proj.weight")
            u = out.pop(f"{p}.{e}.up_proj.weight")
            gate_up.append(torch.cat([g, u], 0))
            down.append(out.pop(f"{p}.{e}.down_proj.weight"))
        out[f"{p}.gate_up_proj"] = torch.stack(gate_up)
        out[f"{p}.down_proj"] = torch.stack(down)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help="JSON: {name: [token ids]}")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()

    import transformers
    from transformers import DeepseekV32ForCausalLM
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    with open(args.prompts) as f:
        prompts = json.load(f)
    conf = build_config(cfg)
    print("config:", conf, flush=True)
    model = DeepseekV32ForCausalLM(conf).float().eval()
    tensors, files = load_checkpoint(args.model)
    sd = state_dict_for(tensors, cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # Buffers that are not parameters (rotary inv_freq) may be "missing"; nothing else may.
    missing = [m for m in missing if "rotary_emb" not in m]
    if missing or unexpected:
        print("state dict mismatch: missing", missing, "unexpected", unexpected, file=sys.stderr)
        sys.exit(1)

    # Record the indexer's selections through forward hooks.
    selections = {}

    def hook(layer):
        def fn(module, inputs, output):
            selections[layer] = output.detach().cpu().numpy()
        return fn

    for i, layer in enumerate(model.model.layers):
        layer.self_attn.indexer.register_forward_hook(hook(i))

    os.makedirs(args.out, exist_ok=True)
    topk = cfg["index_topk"]
    for name, ids in prompts.items():
        selections.clear()
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False,
                        output_hidden_states=True)
        logits = out.logits[0].float().numpy().astype(np.float32)
        np.save(os.path.join(args.out, f"{name}.logits.npy"), logits)
        # Hidden states after the embedding and after every layer (the last one post-norm):
        # only for diagnosing a mismatch layer by layer.
        hidden = np.concatenate([h[0].float().numpy() for h in out.hidden_states], 0).astype(np.float32)
        np.save(os.path.join(args.out, f"{name}.hidden.npy"), hidden)
        S = len(ids)
        sel = np.full((cfg["num_hidden_layers"], S, topk), -1, dtype=np.float32)
        for layer, idx in selections.items():
            idx = idx[0]                                   # [S, k]
            for p in range(S):
                chosen = sorted(int(j) for j in idx[p] if int(j) <= p)   # drop masked future picks
                sel[layer, p, : len(chosen)] = chosen
        np.save(os.path.join(args.out, f"{name}.topk.npy"), sel.reshape(cfg["num_hidden_layers"] * S, topk))
        print(f"{name}: {S} tokens, argmax of the last position {int(logits[-1].argmax())}, "
              f"logit std {float(logits.std()):.3f}", flush=True)

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "dtype": "float32", "attn_implementation": "eager", "device": "cpu",
        "checkpoint_xxh64": checkpoint_hash(args.model, files),
        "config": cfg,
        "prompts": prompts,
    }
    with open(os.path.join(args.out, "golden.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps({k: v for k, v in meta.items() if k != "prompts"}, indent=1))


if __name__ == "__main__":
    main()
