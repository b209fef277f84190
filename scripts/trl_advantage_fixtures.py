#!/usr/bin/env python3
"""Reference advantages and reward metrics from TRL's own code, for src/grpo/advantage.rs and
src/grpo/metrics.rs.

TRL (1.16) computes group advantages inline in `GRPOTrainer._generate_and_score_completions`
(trl/trainer/grpo_trainer.py, lines 2762-2788 for the default
`multi_objective_aggregation="sum_then_normalize"`, line 2810 for `nan_to_num`, and the
metrics at lines 2820-2830), so
there is no function to call for it. This script copies those torch expressions verbatim,
calls TRL's own `nanstd` (trl/trainer/utils.py), and, before computing anything, checks that
every copied line is still present in the installed TRL source: a TRL change makes this
script fail instead of silently producing stale fixtures.

Each case runs in float64 (what the Rust code computes) and in float32 (what TRL runs, since
rewards are float32 there). Two TRL details these fixtures pin down: `nanstd`'s Bessel factor
count/(count-1) is an int64/int64 division, which torch does in float32 even for float64
rewards; and in float32 a flat group such as eight rewards of 0.2 gets a mean that is not
exactly 0.2, hence advantages of about -1.5e-4 and no zero-std flag (case "g8 two groups").

Run:  /work/venv/bin/python scripts/trl_advantage_fixtures.py
Writes tests/fixtures/advantage/trl_advantages.json and trl_metrics.json.
"""

import inspect
import json
import math
import os

import torch
import trl
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.utils import nanstd

# The lines mirrored below, exactly as they appear in TRL (whitespace-stripped).
MIRRORED = [
    "mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)",
    "mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)",
    'if self.scale_rewards in ["group", "none"]:',
    "if num_generations > 1:",
    "std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)",
    "std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)",
    "std_rewards = torch.zeros_like(rewards)",
    'elif self.scale_rewards == "batch":',
    "if rewards.numel() > 1:",
    "std_rewards = nanstd(rewards).expand_as(rewards)",
    "advantages = rewards - mean_grouped_rewards",
    'if self.scale_rewards != "none":',
    "advantages = advantages / (std_rewards + 1e-4)",
    "is_std_zero = torch.isclose(std_rewards, torch.zeros_like(std_rewards))  # for logging",
    "advantages = torch.nan_to_num(advantages, nan=0.0)",
    # metrics
    "mean_rewards = torch.nanmean(rewards_per_func[:, i]).item()",
    'self._metrics[mode][f"rewards/{reward_func_name}/mean"].append(mean_rewards)',
    "std_func_rewards = nanstd(rewards_per_func[:, i]).item()",
    'self._metrics[mode][f"rewards/{reward_func_name}/std"].append(std_func_rewards)',
    "rewards = (rewards_per_func * self.reward_weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)",
    'self._metrics[mode]["reward"].append(torch.nanmean(rewards).item())',
    'self._metrics[mode]["reward_std"].append(nanstd(rewards).item())',
    'self._metrics[mode]["frac_reward_zero_std"].append(is_std_zero.float().mean().item())',
]


def check_trl_source():
    src = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    lines = {l.strip() for l in src.splitlines()}
    missing = [m for m in MIRRORED if m not in lines]
    assert not missing, f"TRL {trl.__version__} changed; re-read grpo_trainer.py: {missing}"
    # The mirrored advantage block, in this order, within the default aggregation branch.
    order = [src.index(m) for m in MIRRORED[:2] + MIRRORED[10:13]]
    assert order == sorted(order), "TRL reordered the advantage computation"
    assert trl.__version__.startswith("1.16"), trl.__version__


def trl_advantages(rewards, num_generations, scale_rewards):
    """grpo_trainer.py 2765-2788 and 2810 (sum_then_normalize), verbatim."""
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        if num_generations > 1:
            std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
            std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
        else:
            std_rewards = torch.zeros_like(rewards)
    elif scale_rewards == "batch":
        if rewards.numel() > 1:
            std_rewards = nanstd(rewards).expand_as(rewards)
        else:
            std_rewards = torch.zeros_like(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    is_std_zero = torch.isclose(std_rewards, torch.zeros_like(std_rewards))  # for logging
    advantages = torch.nan_to_num(advantages, nan=0.0)
    return advantages, std_rewards, is_std_zero


def trl_metrics(rewards_per_func, reward_weights, names, is_std_zero):
    """grpo_trainer.py 2820-2830, verbatim (single process, no unscorable rows)."""
    out = {}
    for i, reward_func_name in enumerate(names):
        mean_rewards = torch.nanmean(rewards_per_func[:, i]).item()
        out[f"rewards/{reward_func_name}/mean"] = mean_rewards
        std_func_rewards = nanstd(rewards_per_func[:, i]).item()
        out[f"rewards/{reward_func_name}/std"] = std_func_rewards
    rewards = (rewards_per_func * reward_weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    out["reward"] = torch.nanmean(rewards).item()
    out["reward_std"] = nanstd(rewards).item()
    out["frac_reward_zero_std"] = is_std_zero.float().mean().item()
    return out


def nan_to_none(xs):
    return [None if (isinstance(x, float) and math.isnan(x)) else x for x in xs]


W = [1.0, 0.6, 0.2, 0.1, 0.1]
TOTAL_WELL = 1.0 + 0.6 * 14 / 15 + 0.2 + 0.1 + 0.1

ADVANTAGE_CASES = [
    ("g2 distinct", 2, [1.0, 0.0]),
    ("g2 all equal", 2, [0.5, 0.5]),
    ("g2 two groups one flat", 2, [0.3, 0.3, 1.96, 0.2]),
    ("g4 ties", 4, [TOTAL_WELL, TOTAL_WELL, 0.3, 0.3]),
    ("g4 one outlier", 4, [0.1, 0.1, 0.1, 0.7]),
    ("g4 all equal 0.1", 4, [0.1, 0.1, 0.1, 0.1]),
    ("g4 all zero", 4, [0.0, 0.0, 0.0, 0.0]),
    ("g4 three groups", 4, [1.2, 0.4, 0.4, 1.9, 0.2, 0.2, 0.2, 0.2, 1.0, 1.1, 1.2, 1.3]),
    ("g4 near-equal", 4, [1.0, 1.0 + 1e-9, 1.0, 1.0 - 1e-9]),
    ("g8 realistic", 8, [1.96, 0.41, 1.5333333333333333, 0.2, 1.1, 0.2, 1.7466666666666666, 0.0]),
    ("g8 two groups", 8, [0.2] * 8 + [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 2.0]),
    ("g1", 1, [0.5, 0.25, 1.0]),
]


def main():
    check_trl_source()
    out_dir = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "advantage")
    os.makedirs(out_dir, exist_ok=True)
    cases = []
    for name, g, rewards in ADVANTAGE_CASES:
        for scale in ["group", "batch", "none"]:
            case = {"name": name, "num_generations": g, "scale_rewards": scale, "rewards": rewards}
            for dtype, tag in [(torch.float64, "f64"), (torch.float32, "f32")]:
                r = torch.tensor(rewards, dtype=dtype)
                adv, std, zero = trl_advantages(r, g, scale)
                case[f"advantages_{tag}"] = adv.tolist()
                case[f"std_rewards_{tag}"] = std.tolist()
                case[f"is_std_zero_{tag}"] = zero.tolist()
                case[f"frac_reward_zero_std_{tag}"] = zero.float().mean().item()
            cases.append(case)
    meta = {
        "source": f"trl {trl.__version__} GRPOTrainer._generate_and_score_completions (sum_then_normalize), torch {torch.__version__}",
        "script": "scripts/trl_advantage_fixtures.py",
    }
    with open(os.path.join(out_dir, "trl_advantages.json"), "w") as f:
        json.dump({"meta": meta, "cases": cases}, f, indent=1)

    names = ["correct", "explanation", "evidence", "format", "conciseness"]
    metric_cases = []
    steps = [
        ("one step g4", 4, "group", [
            [1, 14 / 15, 1, 1, 1], [0, 14 / 15, 1, 1, 1], [1, 0.25, 1 / 3, 1, 1], [0, 0.2, 1 / 3, 0, 0],
            [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1],
        ]),
        ("one step g2 batch", 2, "batch", [
            [1, 0.6, 2 / 3, 1, 1], [1, 0.4, 1 / 3, 1, 0], [0, 2 / 9, 1 / 3, 0, 1], [1, 4 / 11, 1, 1, 1],
        ]),
    ]
    for name, g, scale, comps in steps:
        case = {"name": name, "num_generations": g, "scale_rewards": scale, "weights": W,
                "components": comps}
        for dtype, tag in [(torch.float64, "f64"), (torch.float32, "f32")]:
            rpf = torch.tensor(comps, dtype=dtype)
            weights = torch.tensor(W, dtype=dtype)
            rewards = (rpf * weights.unsqueeze(0)).nansum(dim=1)
            _, _, zero = trl_advantages(rewards, g, scale)
            m = trl_metrics(rpf, weights, names, zero)
            case[f"metrics_{tag}"] = m
        metric_cases.append(case)
    with open(os.path.join(out_dir, "trl_metrics.json"), "w") as f:
        json.dump({"meta": meta, "cases": metric_cases}, f, indent=1)
    print(f"wrote {len(cases)} advantage cases and {len(metric_cases)} metric cases to {out_dir}")


if __name__ == "__main__":
    main()
