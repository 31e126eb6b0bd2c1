"""Training a draft head: TTT loss falls, validation metrics, LoRA specialists on a head."""

import copy

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from metasd_train.data.datamodule import collate, loss_rows, to_example
from metasd_train.distill.head_module import STEP_LOSSES, HeadDistillModule, Targets, fkl, tv
from metasd_train.models.draft_vocab import token_counts
from metasd_train.models.head import build_head
from metasd_train.models.head_io import load_head, save_head
from metasd_train.models.random_init import tiny_llama

VOCAB, DRAFT_VOCAB = 32, 24


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher():
    return tiny_llama(vocab_size=VOCAB, layers=4, hidden=32)


def rows(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        prompt = torch.randint(2, VOCAB, (4,), generator=g).tolist()
        response = torch.randint(2, VOCAB, (8 + i % 3,), generator=g).tolist() + [1]  # ragged: padding
        out.append({"prompt_ids": prompt, "response_ids": response})
    return out


def loader(n=8, seed=0, batch_size=4):
    examples = [to_example(r) for r in rows(n, seed)]
    return DataLoader(examples, batch_size=batch_size, collate_fn=lambda b: collate(b, pad_id=1))


def head_for(teacher, seed=0, feature_layers=None):
    counts = token_counts([r["prompt_ids"] + r["response_ids"] for r in rows()], VOCAB)
    return build_head(teacher, DRAFT_VOCAB, counts, eos_ids=[1], feature_layers=feature_layers, seed=seed)


def trainer(max_steps, callbacks=()):
    return L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=list(callbacks),
    )


class Losses(L.Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.values.append(float(outputs["loss"]))


def test_build_head_is_seeded_and_starts_lm_head_from_the_target(teacher):
    a, b = head_for(teacher), head_for(teacher)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert 1 in a.to_target(torch.arange(DRAFT_VOCAB)).tolist()  # eos forced in
    torch.testing.assert_close(a.lm_head.weight, teacher.lm_head.weight[a.to_target(torch.arange(DRAFT_VOCAB))])
    assert not any(n.startswith("embed") for n in a.state_dict())  # the target's embedding stays shared


def test_teacher_rows_follow_the_head_convention(teacher):
    """Row t: target features h_t, embedding of x_{t+1}, teacher's prediction of x_{t+2} (made at t+1)."""
    module = HeadDistillModule(head_for(teacher, feature_layers=(3, 1, 4)), teacher, ["all"])
    batch = next(iter(loader()))
    features, embeds, t = module._teacher(batch)
    with torch.no_grad():
        out = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    torch.testing.assert_close(features, torch.cat([out.hidden_states[i] for i in (3, 1, 4)], -1))
    torch.testing.assert_close(embeds[:, :-1], teacher.get_input_embeddings()(batch["input_ids"][:, 1:]))
    assert torch.equal(t.argmax[:, :-1], out.logits[:, 1:].argmax(-1))
    assert torch.equal(t.valid[:, :-1], batch["loss_mask"][:, 1:]) and not t.valid[:, -1].any()
    draft = module.head.to_target(torch.arange(DRAFT_VOCAB))
    torch.testing.assert_close(t.probs[:, :-1], out.logits[:, 1:, draft].softmax(-1))
    torch.testing.assert_close(t.on_draft[:, :-1], out.logits[:, 1:].softmax(-1)[..., draft])
    assert torch.equal(t.in_vocab, module.head.t2d[t.argmax])


def test_fkl_steps_skip_the_full_vocabulary_pass_and_keep_the_loss(teacher):
    """Training with fkl alone builds no unnormalised on_draft (a logsumexp over the whole vocabulary)
    and reads the teacher's entropy once per batch; the loss is the KL it always was."""
    module = HeadDistillModule(head_for(teacher), teacher, ["all"])
    batch = next(iter(loader()))
    _, _, lean = module._teacher(batch, on_draft=False)
    _, _, full = module._teacher(batch)
    assert lean.on_draft is None and full.on_draft is not None
    assert torch.equal(lean.probs, full.probs) and torch.equal(lean.neg_entropy, full.neg_entropy)
    logits = torch.randn(*lean.probs.shape)
    kl = torch.nn.functional.kl_div(logits.log_softmax(-1), lean.probs, reduction="none").sum(-1)
    torch.testing.assert_close(fkl(logits, lean), kl, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(lean.neg_entropy, torch.special.xlogy(lean.probs, lean.probs).sum(-1))


@pytest.mark.parametrize("loss, tv_weight, built", [("fkl", 0.0, False), ("fkl", 0.5, True), ("tv", 0.0, True)])
def test_training_builds_on_draft_only_when_a_tv_term_needs_it(teacher, loss, tv_weight, built):
    module = HeadDistillModule(head_for(teacher), teacher, ["all"], loss=loss, tv_weight=tv_weight, ttt_steps=2)
    module.log = lambda *a, **k: None
    seen, targets = [], module._targets

    def spy(*args):
        t = targets(*args)
        seen.append(t.on_draft is not None)
        return t

    module._targets = spy
    module.training_step(next(iter(loader())), 0).backward()
    assert seen == [built]


def _grid_loss(module, batch):
    """The loss as it was computed before loss rows: every step's logits and targets over the whole
    [B, T] grid, masked to response rows at positions >= k."""
    hp = module.hparams
    logits, t = module._unroll(batch, on_draft=True)
    loss = torch.zeros(())
    for k, step_logits in enumerate(logits):
        rows = t.valid & t.in_vocab
        rows[:, :k] = False
        per_row = STEP_LOSSES[hp.loss](step_logits, t)
        if hp.tv_weight > 0:
            per_row = per_row + hp.tv_weight * tv(step_logits, t)
        loss = loss + hp.step_decay**k * ((per_row * rows).sum() / rows.sum().clamp_min(1))
    return loss


@pytest.mark.parametrize("loss, tv_weight", [("fkl", 0.0), ("fkl", 0.5), ("tv", 0.0)])
def test_training_on_loss_rows_is_the_grid_loss(teacher, loss, tv_weight):
    """Logits, targets and loss on the response rows only (collate's loss_rows, or found from the mask
    when a batch has none) give the loss and the gradients of the whole-grid computation."""
    module = HeadDistillModule(head_for(teacher), teacher, ["all"], loss=loss, tv_weight=tv_weight, ttt_steps=3)
    module.log = lambda *a, **k: None
    batch = next(iter(loader()))
    assert torch.equal(batch["loss_rows"], loss_rows(batch["loss_mask"]))
    reference = _grid_loss(module, batch)
    reference.backward()
    expected = {n: p.grad.clone() for n, p in module.head.named_parameters() if p.grad is not None}
    module.head.zero_grad(set_to_none=True)
    for b in (batch, {k: v for k, v in batch.items() if k != "loss_rows"}):
        got = module.training_step(b, 0)
        torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-6)
    got.backward()
    for n, p in module.head.named_parameters():
        if n in expected:
            torch.testing.assert_close(p.grad, expected[n], rtol=1e-4, atol=1e-6)


def test_head_trains_loss_falls(teacher):
    module = HeadDistillModule(head_for(teacher), teacher, ["all"], ttt_steps=3, lr=3e-3, warmup_steps=2, max_steps=30)
    losses = Losses()
    trainer(30, [losses]).fit(module, train_dataloaders=loader())
    assert len(losses.values) == 30
    first, last = sum(losses.values[:4]) / 4, sum(losses.values[-4:]) / 4
    assert last < 0.7 * first, (first, last)


def test_tv_loss_and_validation_metrics_per_domain(teacher):
    module = HeadDistillModule(head_for(teacher), teacher, ["code", "math"], loss="tv", tv_weight=0.5, ttt_steps=3)
    trainer(2).fit(module, train_dataloaders=loader())
    metrics = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False).validate(
        module, dataloaders=[loader(4, seed=1), loader(4, seed=2)], verbose=False
    )
    logged = {k: v for d in metrics for k, v in d.items()}
    for domain in ("code", "math"):
        assert 0 <= logged[f"val/acceptance/{domain}"] <= 1 and 0 <= logged[f"val/top1/{domain}"] <= 1
        assert 0 <= logged[f"val/accept_len/{domain}"] <= 3
    assert min(logged["val/accept_len/code"], logged["val/accept_len/math"]) <= logged["val/accept_len/all"]
    assert logged["val/accept_len/all"] <= max(logged["val/accept_len/code"], logged["val/accept_len/math"])


def test_accept_len_counts_consecutive_greedy_matches_from_each_chain_start(teacher):
    """Hand-written logits: step k's argmax at row t is right where `right[k][t]`; chains start at b."""
    module = HeadDistillModule(head_for(teacher), teacher, ["all"], ttt_steps=3)
    head = module.head
    truth = head.to_target(torch.tensor([[3, 4, 5, 6, 7, 8]]))  # teacher argmax per row
    right = [[1, 1, 1, 1, 0, 1], [0, 1, 1, 1, 1, 1], [1, 1, 1, 0, 1, 1]]
    logits = []
    for k in range(3):
        draft = torch.tensor([[3, 4, 5, 6, 7, 8]]) + 1 - torch.tensor([right[k]])  # wrong id where 0
        logits.append(torch.nn.functional.one_hot(draft, DRAFT_VOCAB).float())
    valid = torch.tensor([[True] * 5 + [False]])
    t = Targets(None, None, truth, valid, torch.ones_like(valid), None)
    # b=0: step1@0 ok, step2@1 ok, step3@2 ok -> 3; b=1: 1@1, 2@2, 3@3 wrong -> 2; b=2: 1@2, 2@3, 3@4 -> 3
    # b=3: 1@3, 2@4, 3@5 invalid -> 2; b=4: 1@4 wrong -> 0; b=5: invalid -> 0
    assert module.accept_lengths(logits, t).tolist() == [[3, 2, 3, 2, 0, 0]]


def test_lora_on_a_head_trains_only_adapters_and_merges_at_export(teacher, tmp_path):
    from peft import LoraConfig, get_peft_model, inject_adapter_in_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    base = head_for(teacher)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, init_lora_weights=False)
    injected = inject_adapter_in_model(cfg, copy.deepcopy(base))  # the in-place flavour works too
    assert sum("lora_A" in n for n, _ in injected.named_parameters()) == 7
    lora = get_peft_model(copy.deepcopy(base), cfg)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    features, embeds = torch.randn(1, 6, 96), torch.randn(1, 6, 32)
    with torch.no_grad():
        before = lora.logits(lora.unroll(features, embeds, torch.ones(1, 6), 2)[-1])
    trainer(2).fit(HeadDistillModule(lora, teacher, ["all"], ttt_steps=2, lr=1e-2, warmup_steps=1), loader())
    with torch.no_grad():
        after = lora.logits(lora.unroll(features, embeds, torch.ones(1, 6), 2)[-1])
    assert not torch.allclose(before, after)
    frozen = {k: v for k, v in lora.get_base_model().state_dict().items() if "lora_" not in k and "base_layer" not in k}
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in frozen.items())  # fc, norms, lm_head untouched
    merged = load_head(save_head(lora, tmp_path / "head"))  # merged into a copy: a plain, full head folder
    with torch.no_grad():
        torch.testing.assert_close(merged.logits(merged.unroll(features, embeds, torch.ones(1, 6), 2)[-1]), after)
    assert any("lora_" in n for n, _ in lora.named_parameters())  # the trained wrapper is left as it was
