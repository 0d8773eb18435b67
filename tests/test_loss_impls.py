"""training/loss.py: the optimised step (impl='fast') against the straightforward reference step
(impl='reference'): the same loss terms and the same gradient of every parameter, phase by
phase, for QC and plain generators, with the whole generator training and with the trunk frozen.
The comparison itself is checked: a dropped or changed phase must show up as a mismatch."""
import pytest
import torch

from training.augment import AugmentPipe
from training.loss import QCLoss, _FakeStash, phase_table
from training.networks import Discriminator, Generator
from training.training_loop import set_requires_grad, trainable_generator_params

TINY16 = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=8))
BATCH, CHUNK = 4, 2          # two chunks per phase, as with --batch-gpu: Ddmain must find its chunk's fakes
# float32: the fast path sums the same products in other orders (row-sliced conv1, pair batches),
# ~1e-7 relative per op; over ~20 layers and double backward that stays far below 1e-4 of a
# tensor's scale, while a dropped or changed phase moves gradients by O(1) of their scale.
RTOL, ATOL_SCALE = 1e-4, 1e-5


def _nets(q_dim):
    torch.manual_seed(0)
    teacher = Generator(**TINY16, q_dim=0)
    with torch.no_grad():
        for p in teacher.parameters():       # noise strengths and biases are 0 at init: perturb all
            p.add_(torch.randn_like(p) * 0.3)
    G = Generator(**TINY16, q_dim=q_dim)
    with torch.no_grad():
        t_state = teacher.state_dict()
        for name, value in G.state_dict().items():
            if name in t_state:
                value[tuple(slice(0, s) for s in t_state[name].shape)] = t_state[name]
            elif "convq" in name or name.endswith("weight"):
                value.add_(torch.randn_like(value) * 0.3)    # widened rows and the DegradBlock: not 0
    d_kwargs = dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=8,
                    epilogue_kwargs=dict(mbstd_group_size=2))
    torch.manual_seed(1)
    D = Discriminator(**d_kwargs)
    D_degraded = Discriminator(**d_kwargs) if q_dim > 0 else None
    return G, D, D_degraded, teacher.eval().requires_grad_(False)


def run_step(impl, q_dim, train_blocks, skip=(), kd_weight=3.0):
    """One training step at step 0 (every phase runs), phase by phase over two chunks, with an SGD
    update after each phase as the trainer does. Returns [(phase, terms, grads, extra state)]."""
    G, D, Dd, teacher = _nets(q_dim)
    aug = AugmentPipe("bgc", p=0.5)
    loss = QCLoss(torch.device("cpu"), G, D, Dd, teacher=teacher if q_dim else None, augment_pipe=aug,
                  r1_gamma=1.0, kd_weight=kd_weight, impl=impl)
    modules = {"G": G, "D": D, "D_degraded": Dd}
    params = {"G": trainable_generator_params(G, train_blocks), "D": list(D.parameters())}
    if Dd is not None:
        params["D_degraded"] = list(Dd.parameters())
    for net in modules.values():
        if net is not None:
            net.requires_grad_(False)
    torch.manual_seed(2)
    real = torch.rand([BATCH, 3, 16, 16]) * 2 - 1
    real_d = (real * 0.5).clamp(-1, 1)
    c = torch.zeros([BATCH, 0])
    z = torch.randn([BATCH, 8])
    torch.manual_seed(3)
    records = []
    for phase in phase_table(degraded=q_dim > 0):
        if phase.name in skip:
            continue
        module = modules[phase.module]
        set_requires_grad(params[phase.module], module, True)
        module.zero_grad(set_to_none=True)
        terms = {}
        for s in range(0, BATCH, CHUNK):
            sl = slice(s, s + CHUNK)
            for k, v in loss.accumulate(phase.name, real[sl], real_d[sl], c[sl], z[sl], c[sl],
                                        gain=phase.interval).items():
                terms.setdefault(k, []).append(v.detach().clone())
        set_requires_grad(params[phase.module], module, False)
        grads = {f"{m}.{n}": (p.grad.clone() if p.grad is not None else None)
                 for m, net in modules.items() if net is not None for n, p in net.named_parameters()}
        with torch.no_grad():
            for p in params[phase.module]:
                if p.grad is not None:
                    p.sub_(0.05 * p.grad)                  # SGD: later phases see the updated networks
        extra = {"pl_mean": {k: float(v) for k, v in loss.pl_mean.items()}, "w_avg": G.mapping.w_avg.clone()}
        records.append((phase.name, {k: torch.cat(v) for k, v in terms.items()}, grads, extra))
    return records


def _close(a, b, scale=None):
    """Close up to float32 reordering; ``scale``: the magnitude the absolute tolerance is relative to
    (default the tensors' own; gradients use the phase's largest, so that second-order-small bias
    gradients of R1 are judged against the step, not against their own rounding)."""
    scale = float(max(a.abs().max(), b.abs().max(), 1e-30)) if scale is None else scale
    return bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL_SCALE * scale))


def mismatches(ref, got):
    """Names of everything that differs between two runs of ``run_step`` (empty = same step)."""
    bad = []
    if [r[0] for r in ref] != [g[0] for g in got]:
        return [f"phases {[r[0] for r in ref]} vs {[g[0] for g in got]}"]
    for (phase, t_ref, g_ref, x_ref), (_, t_got, g_got, x_got) in zip(ref, got):
        if set(t_ref) != set(t_got):
            bad.append(f"{phase}: terms {sorted(t_ref)} vs {sorted(t_got)}")
        bad += [f"{phase}: {k}" for k in t_ref if k in t_got and not _close(t_ref[k], t_got[k])]
        scale = max([float(a.abs().max()) for a in g_ref.values() if a is not None] + [1e-30])
        for name, a in g_ref.items():
            b = g_got[name]
            if (a is None) != (b is None) or (a is not None and not _close(a, b, scale)):
                bad.append(f"{phase}: grad {name}")
        if not all(abs(x_ref["pl_mean"][k] - x_got["pl_mean"][k]) <= 1e-4 * max(abs(x_ref["pl_mean"][k]), 1e-8)
                   for k in x_ref["pl_mean"]) or not _close(x_ref["w_avg"], x_got["w_avg"]):
            bad.append(f"{phase}: pl_mean / w_avg")
    return bad


@pytest.mark.parametrize("q_dim,train_blocks", [(4, "all"), (4, 2), (0, "all"), (0, 2)])
def test_fast_step_equals_reference_step(q_dim, train_blocks):
    ref = run_step("reference", q_dim, train_blocks)
    got = run_step("fast", q_dim, train_blocks)
    assert mismatches(ref, got) == []
    # Every phase ran, produced terms, and moved the gradient of its own module.
    names = [r[0] for r in ref]
    assert names == [p.name for p in phase_table(degraded=q_dim > 0)]
    for phase, terms, grads, _ in got:
        assert terms, phase
        module = {"G": "G.", "D": "D.", "D_": "D_degraded."}[phase[0] if phase[:2] != "Dd" else "D_"]
        assert any(g is not None and float(g.abs().sum()) > 0 for n, g in grads.items() if n.startswith(module)), phase
    if train_blocks != "all":     # frozen mapping and trunk: no gradient reaches them
        gmain = dict((r[0], r[2]) for r in got)["Gmain"]
        assert all(g is None for n, g in gmain.items() if n.startswith("G.mapping") or n.startswith("G.synthesis.b4."))


def test_comparison_catches_a_dropped_or_changed_phase(monkeypatch):
    ref = run_step("reference", 4, 2)
    assert mismatches(ref, run_step("fast", 4, 2, skip=("Greg",)))                  # dropped
    assert any(m.startswith("Gmain: grad") for m in mismatches(ref, run_step("fast", 4, 2, kd_weight=2.0)))  # changed
    # Ddmain rendering fresh fakes (new w, q and noise) instead of Dmain's pair is a changed phase.
    monkeypatch.setattr(_FakeStash, "pop", lambda self, z, c: None)
    assert any(m.startswith("Ddmain") for m in mismatches(ref, run_step("fast", 4, 2)))
