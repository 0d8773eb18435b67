"""training/loss.py: distillation, R1 and path length against direct computations; phase table."""
import torch

from training.loss import QCLoss, distillation_loss, path_length, phase_table, r1_penalty
from training.networks import Discriminator, Generator

TINY = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
            mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=8))


def _tiny_pair(q_dim=4):
    torch.manual_seed(0)
    teacher = Generator(**TINY, q_dim=0)
    student = Generator(**TINY, q_dim=q_dim)
    with torch.no_grad():
        for p in teacher.parameters():      # perturb everything (noise strengths and biases are 0 at init)
            p.add_(torch.randn_like(p) * 0.3)
        t_state = teacher.state_dict()
        for name, value in student.state_dict().items():
            if name in t_state:
                value[tuple(slice(0, s) for s in t_state[name].shape)] = t_state[name]
    return teacher.eval().requires_grad_(False), student


def _tiny_d(seed=1):
    torch.manual_seed(seed)
    return Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=64, channel_max=8,
                         epilogue_kwargs=dict(mbstd_group_size=2))


def test_phase_table_rows():
    names = [(p.name, p.module, p.interval) for p in phase_table(degraded=True)]
    assert names == [("Gmain", "G", 1), ("Greg", "G", 4), ("Dmain", "D", 1), ("Dreg", "D", 16),
                     ("Ddmain", "D_degraded", 1), ("Ddreg", "D_degraded", 16)]
    assert [p.name for p in phase_table(degraded=False, use_pl=False)] == ["Gmain", "Dmain", "Dreg"]


def test_kd_is_zero_for_student_equal_teacher_at_q0():
    teacher, student = _tiny_pair()
    loss = QCLoss(torch.device("cpu"), student, _tiny_d(), _tiny_d(2), teacher=teacher, kd_weight=3)
    assert loss.kd_resolutions == [4, 8]
    z = torch.randn([4, 8])
    ws = loss.mapping(z, torch.zeros([4, 0]))
    _img, kd = loss.degraded_with_kd(ws, torch.zeros([4, 4]))       # random noise, replayed for the teacher
    scale = float(sum(f.square().mean() for f in loss.teacher_feats(ws)))
    assert kd.shape == (4,) and float(kd.detach().abs().max()) < 1e-10 * scale  # 0 up to float rounding
    _img, kd_q = loss.degraded_with_kd(ws, torch.randn([4, 4]))
    assert float(kd_q.detach().min()) > 1e-6           # the top block's input carries the lower residual
    # The teacher's features are its conv1 outputs: equal to the student's sharp x_c.
    feats = loss.teacher_feats(ws)
    _, s_feats = student.synthesis(ws, q=None, noise_mode="const", return_feats=True)
    assert [f.shape for f in feats] == [f.shape for f in s_feats]


def test_distillation_loss_value():
    a = [torch.zeros([2, 3, 4, 4]), torch.zeros([2, 1, 8, 8])]
    b = [torch.ones([2, 3, 4, 4]), torch.full([2, 1, 8, 8], 2.0)]
    torch.testing.assert_close(distillation_loss(a, b), torch.tensor([5.0, 5.0]))   # 1 + 4, per image


def test_r1_matches_direct_jacobian_and_gradients():
    D = _tiny_d()
    x = torch.randn([4, 3, 8, 8])
    real = x.clone().requires_grad_(True)
    pen = r1_penalty(real, lambda t: D(t))
    # Direct: full Jacobian of the summed logits (minibatch-std couples the images), squared norm per image.
    jac = torch.autograd.functional.jacobian(lambda t: D(t).sum(), x, create_graph=True)
    direct = jac.square().sum(dim=[1, 2, 3])
    torch.testing.assert_close(pen, direct, rtol=1e-5, atol=1e-7)
    g1 = torch.autograd.grad(pen.mean(), list(D.parameters()), allow_unused=True)
    g2 = torch.autograd.grad(direct.mean(), list(D.parameters()), allow_unused=True)
    for a, b in zip(g1, g2):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_r1_linear_discriminator_closed_form():
    w = torch.randn([3, 4, 4])
    real = torch.randn([5, 3, 4, 4]).requires_grad_(True)
    pen = r1_penalty(real, lambda t: (t * w).sum(dim=[1, 2, 3]))
    torch.testing.assert_close(pen, w.square().sum().expand(5))


def test_path_length_matches_per_image_jacobian():
    """||J^T y|| per image from the full Jacobian d img_i / d ws_i of a 4x4 QC generator."""
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=4, img_channels=3, q_dim=2,
                  mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=32, channel_max=8, degrad_blocks=1))
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    ws = G.mapping(torch.randn([2, 8]), torch.zeros([2, 0])).detach()
    q = torch.randn([2, 2])
    noise = torch.randn([2, 3, 4, 4]) / 4
    ws_req = ws.clone().requires_grad_(True)
    got = path_length(G.synthesis(ws_req, q=q, noise_mode="const"), ws_req, noise)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda w: G.synthesis(w, q=q[i:i + 1], noise_mode="const"), ws[i:i + 1])   # [1,3,4,4,1,num_ws,w_dim]
        jty = (jac[0, :, :, :, 0] * noise[i].view(3, 4, 4, 1, 1)).sum(dim=[0, 1, 2])  # [num_ws, w_dim]
        expected = jty.square().sum(dim=1).mean().sqrt()
        torch.testing.assert_close(got[i], expected, rtol=1e-4, atol=1e-6)


def test_greg_updates_both_running_means_and_penalises_deviation():
    teacher, G = _tiny_pair()
    loss = QCLoss(torch.device("cpu"), G, _tiny_d(), _tiny_d(2), teacher=teacher, pl_weight=2, pl_decay=0.5)
    z = torch.randn([4, 8])
    c = torch.zeros([4, 0])
    terms = loss.accumulate("Greg", torch.zeros([4, 3, 8, 8]), None, c, z, c, gain=4)
    assert set(terms) == {"G/pl_sharp", "G/pl_degraded"}
    assert float(loss.pl_mean["sharp"]) > 0 and float(loss.pl_mean["degraded"]) > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in G.synthesis.parameters())


def test_phases_fill_gradients_of_their_module_only():
    teacher, G = _tiny_pair()
    D, Dd = _tiny_d(), _tiny_d(2)
    loss = QCLoss(torch.device("cpu"), G, D, Dd, teacher=teacher, r1_gamma=1)
    real = torch.rand([4, 3, 8, 8]) * 2 - 1
    c = torch.zeros([4, 0])
    for phase in ["Gmain", "Dmain", "Ddreg"]:
        for net in (G, D, Dd):
            net.zero_grad(set_to_none=True)
        terms = loss.accumulate(phase, real, real * 0.5, c, torch.randn([4, 8]), c, gain=1)
        assert all(torch.isfinite(v).all() for v in terms.values())
        learner = {"Gmain": G, "Dmain": D, "Ddreg": Dd}[phase]
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.parameters())
    assert set(loss.accumulate("Gmain", real, real, c, torch.randn([4, 8]), c, 1)) == \
        {"G/adv_sharp", "G/adv_degraded", "G/kd"}
