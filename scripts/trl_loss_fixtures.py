#!/usr/bin/env python
"""Reference numbers for src/grpo/loss.rs, optim.rs and schedule.rs from TRL 1.16 / torch / transformers.

Run:  /work/venv/bin/python scripts/trl_loss_fixtures.py   (CPU, ~1 minute)
Writes tests/fixtures/loss/:
  cases.json               one entry per loss case: the TRL settings, the step loss, the per-micro-batch
                           losses and metrics exactly as TRL's `_compute_loss` logs them
  <case>.safetensors       logits [N,T,V] (completion positions only), completion_ids, mask, advantages,
                           old/ref log-probs, TRL's per-token log-probs and entropies, and d(step loss)/d(logits)
  optim.json / optim.safetensors   torch.optim.AdamW (fused, like TRL's `adamw_torch_fused`) + clip_grad_norm_
                           + transformers' LR schedules for a few steps with given gradients
  schedule.json            transformers `get_scheduler` learning rates per step

How the loss reference is made: a real `GRPOTrainer` (tiny random Gemma3ForCausalLM, CPU, f32) per case,
fed crafted inputs (prompt/completion ids and masks, advantages, old/ref log-probs, num_items_in_batch)
one micro-batch at a time through `trainer._compute_loss`, as TRL's training loop does for one optimizer
step (generation batch = per_device_train_batch_size x gradient_accumulation_steps rows, split into
consecutive micro-batches; the summed micro-batch losses are what `backward` sees because
`GRPOTrainer.loss_is_scaled_for_ga` is True).

TRL 1.16 never materializes logits: its fused LM head returns log-probs and entropies directly. To get a
gradient w.r.t. logits, each case is run twice:
  1. the untouched trainer (fused head) -> loss and metrics (what TRL really computes),
  2. the same trainer with `_get_per_token_logps_and_entropies` replaced by TRL's own
     `selective_log_softmax_and_entropy` on a leaf logits tensor taken from the model's ordinary forward
     (zeroed where the completion mask is 0, as the fused head does) -> same loss (asserted), plus
     autograd d(loss)/d(logits).
The Rust tests feed these logits to `token_logps_and_entropy` + `grpo_loss`.
"""

import json
import math
import os
import sys

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "loss")

V = 64  # vocab
P = 5  # prompt length (left padded)
T = 6  # max_completion_length
G = 4  # num_generations
B = 4  # per_device_train_batch_size
GA = 3  # gradient_accumulation_steps
N = B * GA  # completions per optimizer step (3 groups)


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(V)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="t2", eos_token="t1", pad_token="t0", unk_token="t3"
    )


def make_model():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=64,
        sliding_window=8,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    model = Gemma3ForCausalLM(cfg).float()
    # a random tiny model is nearly uniform; spread the logits so probabilities differ per token
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(8.0)
    return model


def make_trainer(case):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir="/tmp/trl_loss_fixtures",
        use_cpu=True,
        bf16=False,
        report_to=[],
        per_device_train_batch_size=B,
        gradient_accumulation_steps=GA,
        num_generations=G,
        max_completion_length=T,
        loss_type=case["loss_type"],
        beta=case["beta"],
        epsilon=case["epsilon"],
        epsilon_high=case["epsilon_high"],
        importance_sampling_level=case["importance_sampling_level"],
        use_bias_correction_kl=case["use_bias_correction_kl"],
        temperature=case["temperature"],
        logging_steps=1,
        seed=0,
    )
    ds = Dataset.from_dict({"prompt": ["t5 t6 t7"] * 8})
    # a path, not a model object: with beta > 0 TRL builds its reference model from the same path
    path = "/tmp/trl_loss_fixtures/model"
    if not os.path.exists(os.path.join(path, "config.json")):
        make_model().save_pretrained(path)
    trainer = GRPOTrainer(
        model=path,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=ds,
        processing_class=make_tokenizer(),
    )
    trainer.model.train()
    return trainer


def make_batch(seed):
    g = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(4, V, (N, P), generator=g)
    prompt_mask = torch.ones(N, P, dtype=torch.long)
    # left padding on some prompts
    for i, pad in enumerate([0, 1, 0, 2, 0, 0, 1, 0, 0, 3, 0, 0]):
        prompt_ids[i, :pad] = 0
        prompt_mask[i, :pad] = 0
    completion_ids = torch.randint(4, V, (N, T), generator=g)
    # completion lengths: some full (truncated), some short (eos then padding), one empty row
    lengths = [6, 3, 5, 1, 6, 2, 4, 6, 0, 5, 6, 3]
    completion_mask = torch.zeros(N, T, dtype=torch.long)
    for i, L in enumerate(lengths):
        completion_mask[i, :L] = 1
        if 0 < L < T:
            completion_ids[i, L - 1] = 1  # eos
        completion_ids[i, L:] = 0  # pad
    # group advantages: group 0 mixed, group 1 all zero (equal rewards), group 2 mixed
    advantages = torch.tensor(
        [1.2, -0.4, -1.1, 0.3, 0.0, 0.0, 0.0, 0.0, -0.9, 1.5, -0.2, -0.4], dtype=torch.float32
    )
    return prompt_ids, prompt_mask, completion_ids, completion_mask, advantages


def model_logits(trainer, input_ids, attention_mask):
    """Logits of the completion positions from the model's ordinary forward (not the fused head)."""
    with torch.no_grad():
        out = trainer.model(input_ids=input_ids, attention_mask=attention_mask, fused_lm_head=False)
    return out.logits[:, P - 1 : P - 1 + T, :].float().contiguous()


def run_case(case, out_cases):
    from trl.trainer.utils import selective_log_softmax_and_entropy

    trainer = make_trainer(case)
    prompt_ids, prompt_mask, completion_ids, completion_mask, advantages = make_batch(seed=case["seed"])
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    attention_mask = torch.cat([prompt_mask, completion_mask], 1)
    logits = model_logits(trainer, input_ids, attention_mask)
    temp = case["temperature"]
    maskf = completion_mask.float()

    # TRL's own log-probs at the completion positions (fused head), used for old/ref construction
    with torch.no_grad():
        cur_logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, attention_mask, T, compute_entropy=True
        )
    g = torch.Generator().manual_seed(case["seed"] + 100)
    old = None
    if case["off_policy"]:
        # old log-probs away from current ones so that clipping is active on both sides;
        # padding positions hold junk (the loss must not depend on them)
        old = cur_logps + (torch.rand(N, T, generator=g) - 0.5) * 0.8
        old = torch.where(completion_mask.bool(), old, torch.full_like(old, -7.5))
    ref = None
    if case["beta"] != 0.0:
        ref = cur_logps + (torch.rand(N, T, generator=g) - 0.5) * 0.6
        ref = torch.where(completion_mask.bool(), ref, torch.full_like(ref, -3.25))
    num_items = completion_mask.sum()

    def micro_inputs(k):
        sl = slice(k * B, (k + 1) * B)
        inp = {
            "prompt_ids": prompt_ids[sl],
            "prompt_mask": prompt_mask[sl],
            "completion_ids": completion_ids[sl],
            "completion_mask": completion_mask[sl],
            "advantages": advantages[sl],
            "num_items_in_batch": num_items,
        }
        if old is not None:
            inp["old_per_token_logps"] = old[sl]
        if ref is not None:
            inp["ref_per_token_logps"] = ref[sl]
        return inp

    metric_names = ["kl", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"]

    # 1. the real TRL path (fused LM head)
    trainer._metrics["train"].clear()
    fused_losses = []
    for k in range(GA):
        trainer.current_gradient_accumulation_steps = GA
        fused_losses.append(trainer._compute_loss(trainer.model, micro_inputs(k)).item())
    fused_metrics = {m: list(trainer._metrics["train"].get(m, [])) for m in metric_names}

    # 2. the same code on leaf logits -> gradient w.r.t. logits
    leaf = logits.clone().requires_grad_(True)
    state = {"k": 0}

    def patched(model, input_ids_, attention_mask_, logits_to_keep, **kw):
        k = state["k"]
        sl = slice(k * B, (k + 1) * B)
        lp, ent = selective_log_softmax_and_entropy(leaf[sl], completion_ids[sl], temperature=temp)
        m = completion_mask[sl].bool()
        return lp.masked_fill(~m, 0.0), ent.masked_fill(~m, 0.0), None

    trainer._get_per_token_logps_and_entropies = patched
    trainer._metrics["train"].clear()
    losses = []
    step_loss = torch.zeros(())
    for k in range(GA):
        state["k"] = k
        trainer.current_gradient_accumulation_steps = GA
        loss = trainer._compute_loss(trainer.model, micro_inputs(k))
        losses.append(loss.item())
        step_loss = step_loss + loss
    step_loss.backward()
    metrics = {m: list(trainer._metrics["train"].get(m, [])) for m in metric_names}
    for a, b in zip(fused_losses, losses):
        assert abs(a - b) <= 1e-5 * max(1e-3, abs(a)), (case["name"], fused_losses, losses)
    for m in metric_names:
        for a, b in zip(fused_metrics[m], metrics[m]):
            assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), (case["name"], m, fused_metrics[m], metrics[m])

    with torch.no_grad():
        lp_all, ent_all = selective_log_softmax_and_entropy(logits, completion_ids, temperature=temp)
        trl_logps = lp_all.masked_fill(~completion_mask.bool(), 0.0)
        trl_entropy = ent_all.masked_fill(~completion_mask.bool(), 0.0)
        assert torch.allclose(trl_logps, cur_logps, atol=2e-5), (trl_logps - cur_logps).abs().max()

    tensors = {
        "logits": logits,
        "completion_ids": completion_ids.to(torch.int64),
        "mask": maskf,
        "advantages": advantages,
        "trl_logps": trl_logps,
        "trl_entropy": trl_entropy,
        "grad_logits": leaf.grad.detach().clone(),
    }
    if old is not None:
        tensors["old_logps"] = old.float().contiguous()
    if ref is not None:
        tensors["ref_logps"] = ref.float().contiguous()
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, f"{case['name']}.safetensors"))

    entry = dict(case)
    entry.update(
        {
            "n": N,
            "t": T,
            "v": V,
            "per_device_train_batch_size": B,
            "gradient_accumulation_steps": GA,
            "num_generations": G,
            "max_completion_length": T,
            "step_loss": float(sum(losses)),
            "micro_losses": losses,
            "fused_micro_losses": fused_losses,
            "metrics": {m: v for m, v in fused_metrics.items() if v},
        }
    )
    out_cases.append(entry)
    print(f"{case['name']:32s} step_loss={sum(losses):+.6f}  metrics={ {m: [round(x, 4) for x in v] for m, v in entry['metrics'].items()} }")


CASES = [
    # name, loss_type, beta, off_policy, level, bias-corrected kl, temperature, epsilon, epsilon_high
    ("dapo_onpolicy", "dapo", 0.0, False, "token", True, 1.0, 0.2, None),
    ("dapo_clip", "dapo", 0.0, True, "token", True, 0.9, 0.2, None),
    ("grpo_clip", "grpo", 0.0, True, "token", True, 0.9, 0.2, None),
    ("bnpo_clip", "bnpo", 0.0, True, "token", True, 0.9, 0.2, None),
    ("dr_grpo_clip", "dr_grpo", 0.0, True, "token", True, 0.9, 0.2, None),
    ("dapo_clip_asym", "dapo", 0.0, True, "token", True, 0.7, 0.2, 0.28),
    ("dapo_onpolicy_beta", "dapo", 0.04, False, "token", True, 1.0, 0.2, None),
    ("dapo_clip_beta_biascorr", "dapo", 0.04, True, "token", True, 0.9, 0.2, None),
    ("grpo_clip_beta_nobiascorr", "grpo", 0.1, True, "token", False, 0.9, 0.2, None),
    ("bnpo_clip_beta", "bnpo", 0.1, True, "token", True, 1.0, 0.2, None),
    ("dr_grpo_clip_beta", "dr_grpo", 0.1, True, "token", True, 1.0, 0.2, None),
    ("gspo_dapo_clip", "dapo", 0.0, True, "sequence", True, 0.9, 0.1, None),
    ("gspo_grpo_clip_beta", "grpo", 0.04, True, "sequence", True, 0.9, 0.05, 0.08),
    ("gspo_dapo_onpolicy_beta", "dapo", 0.04, False, "sequence", False, 1.0, 0.2, None),
]


def loss_fixtures():
    os.makedirs(OUT, exist_ok=True)
    cases = []
    for i, (name, lt, beta, off, level, bc, temp, eps, eps_hi) in enumerate(CASES):
        case = {
            "name": name,
            "loss_type": lt,
            "beta": beta,
            "off_policy": off,
            "importance_sampling_level": level,
            "use_bias_correction_kl": bc,
            "temperature": temp,
            "epsilon": eps,
            "epsilon_high": eps_hi,
            "seed": 1000 + i,
        }
        run_case(case, cases)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"trl_version": __import__("trl").__version__, "cases": cases}, f, indent=1)



def optim_run(name, params0, grads, lr, wd, eps, sched, warmup, total, max_norm, out, tensors):
    """HF Trainer's update order for each optimizer step: clip_grad_norm_ (total norm over all params,
    coef = max_norm / (norm + 1e-6) clamped to 1), optimizer.step() with the scheduler's current lr,
    scheduler.step(). AdamW fused (TRL's default optim `adamw_torch_fused`), checked against the
    for-each implementation."""
    from transformers import get_scheduler

    runs = {}
    for impl in ["fused", "foreach"]:
        ps = [torch.nn.Parameter(p.clone()) for p in params0]
        kw = {"fused": True} if impl == "fused" else {"foreach": True}
        opt = torch.optim.AdamW(ps, lr=lr, betas=(0.9, 0.999), eps=eps, weight_decay=wd, **kw)
        sch = get_scheduler(sched, opt, num_warmup_steps=warmup, num_training_steps=total)
        norms, lrs, after = [], [], []
        for step_grads in grads:
            for p, g in zip(ps, step_grads):
                p.grad = g.clone()
            norms.append(torch.nn.utils.clip_grad_norm_(ps, max_norm).item())
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sch.step()
            after.append([p.detach().clone() for p in ps])
        runs[impl] = (norms, lrs, after, opt)
    nf, lf, af, opt = runs["fused"]
    ne, le, ae, _ = runs["foreach"]
    for xs, ys in zip(af, ae):
        for x, y in zip(xs, ys):
            assert torch.allclose(x, y, rtol=1e-6, atol=1e-7), (x - y).abs().max()
    for s, step_params in enumerate(af):
        for j, p in enumerate(step_params):
            tensors[f"{name}.step{s}.param{j}"] = p.contiguous()
    for j, p in enumerate(params0):
        tensors[f"{name}.init.param{j}"] = p.contiguous()
        st = opt.state[list(opt.state.keys())[j]]
        tensors[f"{name}.final.exp_avg{j}"] = st["exp_avg"].contiguous()
        tensors[f"{name}.final.exp_avg_sq{j}"] = st["exp_avg_sq"].contiguous()
    for s, step_grads in enumerate(grads):
        for j, g in enumerate(step_grads):
            tensors[f"{name}.step{s}.grad{j}"] = g.contiguous()
    out[name] = {
        "lr": lr,
        "weight_decay": wd,
        "eps": eps,
        "betas": [0.9, 0.999],
        "scheduler": sched,
        "warmup_steps": warmup,
        "total_steps": total,
        "max_grad_norm": max_norm,
        "num_params": len(params0),
        "steps": len(grads),
        "grad_norm": nf,
        "lr_used": lf,
    }
    print(f"{name}: grad_norm={[round(x, 4) for x in nf]} lr={lf}")


def optim_fixtures():
    from transformers import get_scheduler

    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    shapes = [(3, 4), (5,), (2, 3)]
    params0 = [torch.randn(s, generator=g) * 0.5 for s in shapes]
    # gradient scales: some steps above max_grad_norm (clipped), some below
    scales = [2.0, 0.05, 1.0, 0.3, 3.0, 0.01]
    grads = [[torch.randn(s, generator=g) * sc for s in shapes] for sc in scales]
    tiny = [[torch.randn(s, generator=g) * 1e-3 * (1 + k) for s in shapes] for k in range(5)]
    out, tensors = {}, {}
    optim_run("a", params0, grads, 1e-2, 0.1, 1e-8, "linear", 2, 8, 1.0, out, tensors)
    # large eps and tiny gradients: shows where epsilon enters the update
    optim_run("b", params0, tiny, 5e-2, 0.0, 1e-3, "cosine", 1, 6, 1.0, out, tensors)
    # weight decay with a constant lr and no clipping (max_norm huge)
    optim_run("c", params0, grads[:4], 3e-2, 0.5, 1e-8, "constant", 0, 4, 1e9, out, tensors)
    save_file({k: v.clone().contiguous() for k, v in tensors.items()}, os.path.join(OUT, "optim.safetensors"))

    # learning-rate schedules: lr used by the update of optimizer step k (k = 0 .. total), transformers
    sched = []
    for name in ["linear", "cosine", "constant_with_warmup", "constant"]:
        for total, warmup in [(10, 0), (10, 3), (7, 1), (5, 5), (1, 0)]:
            p = torch.nn.Parameter(torch.zeros(1))
            opt = torch.optim.SGD([p], lr=2e-5)
            sch = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total)
            lrs = []
            for _ in range(total + 1):
                lrs.append(opt.param_groups[0]["lr"])
                opt.step()
                sch.step()
            sched.append({"scheduler": name, "peak_lr": 2e-5, "total_steps": total, "warmup_steps": warmup, "lr": lrs})
    # transformers 5: warmup_steps < 1 is a ratio, rounded up: TrainingArguments.get_warmup_steps
    from transformers import TrainingArguments

    ratios = []
    for total, ratio in [(7, 0.1), (100, 0.03), (10, 0.0), (9, 0.5)]:
        a = TrainingArguments(output_dir="/tmp/trl_loss_fixtures", warmup_steps=ratio, use_cpu=True, report_to=[])
        ratios.append({"total_steps": total, "warmup_ratio": ratio, "warmup_steps": a.get_warmup_steps(total)})
    with open(os.path.join(OUT, "optim.json"), "w") as f:
        json.dump(
            {"torch_version": torch.__version__, "runs": out, "schedules": sched, "warmup_ratio": ratios}, f, indent=1
        )


if __name__ == "__main__":
    what = sys.argv[1:] or ["loss", "optim"]
    if "loss" in what:
        loss_fixtures()
    if "optim" in what:
        optim_fixtures()
