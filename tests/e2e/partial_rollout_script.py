import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from rlhf_platform.modeling import shared_prompt_logprobs
from rlhf_platform.roles.inprocess import InProcessTransport
from rlhf_platform.roles.rollout_engine import RolloutEngine
from rlhf_platform.sampling import SamplingSpec
from rlhf_platform.streaming import GroupRequest
from rlhf_platform.types import Prompt
from rlhf_platform.weight_sync import WeightSyncBus, engine_weights, snapshot_of

if __name__ == "__main__":
    model_dir = sys.argv[1]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    bus, transport = WeightSyncBus(), InProcessTransport()
    engine = RolloutEngine("rollout-0", "vllm", model_dir, bus=bus, transport=transport, max_model_len=256, per_request_seeds=True)
    texts = ["What is 3 + 4? Reply with only the number.", "What is 12 + 9?", "Tell me a short story."]
    requests = [GroupRequest(i, Prompt(f"p{i}", t, tuple(tokenizer(t)["input_ids"]), "7"), seed=100 + i) for i, t in enumerate(texts)]
    spec = SamplingSpec(n=2, temperature=0.7, max_new_tokens=24)
    states, generator, groups = {0: {k: v.detach().clone() for k, v in hf.state_dict().items()}}, torch.Generator().manual_seed(0), []
    def step_engine(new=()):
        out = engine.stream(list(new), spec, partial=True, want_groups=99, max_seconds=0.0)
        groups.extend(out.groups)
        return out
    step_engine(requests)
    for _ in range(5):
        step_engine()
    for version in (1, 2):
        with torch.no_grad():
            for param in hf.parameters():
                param.add_(0.03 * torch.randn(param.shape, generator=generator))
        states[version] = {k: v.detach().clone() for k, v in hf.state_dict().items()}
        bus.publish(snapshot_of(engine_weights(states[version], True, torch.float32), version, transport))
        for _ in range(6):
            out = step_engine()
    while out.holding:
        out = step_engine()
    diffs = {}
    with torch.no_grad():
        for group in groups:
            for t in group:
                versions = t.versions_of_tokens()
                ids = torch.tensor([t.response_token_ids])
                for v in set(versions):
                    hf.load_state_dict(states[v])
                    ours = shared_prompt_logprobs(hf, torch.tensor(t.prompt_token_ids), ids, torch.ones_like(ids), temperature=0.7)[0]
                    cols = torch.tensor([i for i, x in enumerate(versions) if x == v])
                    diffs.setdefault(v, []).append((ours[cols] - torch.tensor(t.behaviour_logprobs)[cols]).abs().max().item())
    print("RESULT " + json.dumps({
        "spans": [t.version_spans() for g in groups for t in g],
        "tokens": [t.response_token_ids for g in groups for t in g],
        "max_abs": {v: max(d) for v, d in diffs.items()},
        "interruptions": out.interruptions,
    }))
