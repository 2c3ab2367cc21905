import json
import math
import re
import shlex
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import train_results
import vqvae_eval
from hyper_params import ModelConfig, load_config
from paths import UserError
from prepare_mitbih import SourceSamples, source_samples
from vqvae import GAIN_BITS, GAIN_STEPS, VQVAE, VectorQuantizer


def tiny_model(**kw) -> VQVAE:
    """One codebook, no window gain unless asked: the tests of those features ask."""
    cfg = ModelConfig(**{"downsample_factor": 4, "channels": 16, "res_blocks": 1, "attention_heads": 2,
                         "latent_dim": 8, "codebook_size": 32, "num_quantizers": 1, "window_gain": False, **kw})
    return VQVAE(cfg, [0.5, 0.4])


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("length", [64, 128, 200])
def test_shapes_for_any_multiple_of_the_factor(attention: bool, length: int) -> None:
    torch.manual_seed(0)
    m = tiny_model(has_attention=attention)
    x = torch.randn(3, length, 2)
    codes = m.encode(x)
    assert codes.shape == (3, length // 4) and codes.dtype == torch.int64
    assert int(codes.max()) < 32
    assert m.decode(codes).shape == (3, length, 2)
    x_hat, losses = m(x)
    assert x_hat.shape == x.shape
    assert set(losses) >= {"loss", "recon", "commitment", "perplexity"}
    assert m.encode_latent(x).shape == (3, 8, length // 4)


@pytest.mark.parametrize("factor", [0, 6, 12])
def test_a_factor_no_power_of_2_builds_no_model(factor: int) -> None:
    """A ModelConfig built in code is not validated: a factor of 6 built a model that halved a window twice (factor 4),
    whose codes [B, T / 4] went with a factor, checks and compression_ratio of 6 (0: 'math domain error')."""
    with pytest.raises(ValueError, match=f"downsample_factor must be a power of 2, got {factor}"):
        tiny_model(downsample_factor=factor)


def test_rejects_length_not_multiple_of_factor() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        tiny_model().encode(torch.randn(1, 66, 2))


@pytest.mark.parametrize("shape, hint", [
    ((64, 2), r"one window \[T, 2\] takes x\[None\]"),
    ((1, 2, 64), r"leads come last, x\.transpose\(1, 2\)"),
    ((2, 64), r"leads come last, x\.T\[None\] of one window \[2, T\]"),
    ((1, 66, 2), r"keep whole steps of 4 samples, x\[:, -64:\]"),
    ((1, 3, 2), r"a window holds at least one step of 4 samples"),
])
def test_a_refused_window_says_what_to_pass(shape: tuple[int, ...], hint: str) -> None:
    """A window without its batch axis, with its leads first (a record's signal.T) or not of whole steps was told
    only the shape encode wants, [B, T, 2] with T a multiple of the factor, not what to do with the one given."""
    with pytest.raises(ValueError, match=rf"got {re.escape(str(shape))}: {hint}"):
        tiny_model().encode(torch.randn(*shape))


@pytest.mark.parametrize("window_gain", [True, False])
def test_a_window_in_microvolts_is_warned_of_at_the_callers_line(window_gain: bool) -> None:
    """Windows in microvolts were coded without a word (the gain clamped at 16 mV, or the training std far off):
    unit, and encode and encode_latent without one, warn at the line that called them; a window in mV, and the
    forecasters' unit(x, warn=False) (their predict warned of the context already), do not."""
    m = tiny_model(window_gain=window_gain).eval()
    mv = torch.randn(1, 64, 2)
    uv = mv * 1000
    for call in (m.unit, m.encode, m.encode_latent):
        with pytest.warns(UserWarning, match=r"2 lead\(s\) of the windows have an RMS above 16 mV, the first window "
                                              r"0's lead 1 .*Convert them to mV") as said:
            call(uv)
        assert [w.filename for w in said] == [__file__], call.__name__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.unit(uv, warn=False)
        m.encode(mv)


def test_one_loud_lead_among_quiet_windows_is_warned_of_by_name() -> None:
    """One window of a batch, one lead of it, in microvolts (the rest in mV) is warned of too, named."""
    m = tiny_model().eval()
    x = torch.randn(3, 64, 2)
    x[1, :, 1] *= 1000
    with pytest.warns(UserWarning, match=r"^1 lead\(s\) of the windows have an RMS above 16 mV, the first window 1's "
                                         r"lead 2 "):
        m.unit(x)


def test_numpy_windows_get_a_hint() -> None:
    with pytest.raises(TypeError, match="torch.as_tensor"):
        tiny_model().encode(np.zeros((1, 64, 2), np.float32))


@pytest.mark.parametrize("step", ["unit", "encode_latent", "encode"])
def test_windows_the_readme_recipe_cannot_code_are_named_at_its_first_step(step: str) -> None:
    """A numpy window met the gain's x.pow (AttributeError), a float64 one torch's 'Input type (double) and bias
    type (float)', an empty one (a slice past the record's end) a convolution's kernel size, and one on another
    device than the model (the README's CPU window, the forecaster on the GPU) torch's 'Input type ... weight type'."""
    m = tiny_model(window_gain=True)
    with pytest.raises(TypeError, match="torch.as_tensor"):
        getattr(m, step)(np.zeros((1, 64, 2), np.float32))
    with pytest.raises(ValueError, match="float64.*x.float()"):
        getattr(m, step)(torch.ones(1, 64, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="empty window.*past the record's end"):
        getattr(m, step)(torch.ones(1, 0, 2))
    with pytest.raises(ValueError, match=r"on meta, the model on cpu: pass x.to\(vq.device\)"):
        getattr(m, step)(torch.ones(1, 64, 2, device="meta"))    # as a CPU window met a forecaster on the GPU


@pytest.mark.parametrize("step", ["unit", "encode_latent", "encode"])
@pytest.mark.parametrize("gain", [True, False])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_window_with_nan_or_inf_samples_is_named_not_coded(step: str, gain: bool, value: float) -> None:
    """A window over a record's gap (read_record(..., gaps=True)) or a dropout was coded without a word: NaN distances
    made every code of it code 0, and its reconstruction NaN."""
    m = tiny_model(window_gain=gain)
    x = torch.randn(2, 64, 2)
    x[1, 10, 1], x[1, 30, 0] = value, value
    with pytest.raises(ValueError, match=r"2 NaN or inf samples, the first at window 1, sample 10, lead 2"):
        getattr(m, step)(x)


def test_a_unit_of_other_windows_or_latents_time_first_are_refused_by_name() -> None:
    """encode(x, unit) with a unit of three windows for one coded the one three times, silently; a unit [B, 2, 1]
    and decode_latent of latents time first (vqvae_eval.py's .npz layout) stopped in torch's size and channel
    errors."""
    m = tiny_model(window_gain=True).eval()
    x = torch.randn(1, 64, 2)
    unit = m.unit(x)
    with torch.no_grad():
        z = m.encode_latent(x, unit)
        assert m.decode_latent(z, unit[0, 0]).shape == (1, 64, 2)          # one gain per lead for all: fine
        for wrong in (unit.repeat(3, 1, 1), unit.transpose(1, 2)):
            for step in (lambda: m.encode(x, wrong), lambda: m.decode_latent(z, wrong),
                         lambda: m.decode(m.encode(x, unit), wrong)):
                with pytest.raises(ValueError, match=r"unit has shape .*, not \[1, 1, 2\].*vq.unit\(x\)"):
                    step()
        with pytest.raises(ValueError, match=r"latents must be \[B, 8, T'\].*got \(1, 16, 8\).*z.transpose\(1, 2\)"):
            m.decode_latent(z.transpose(1, 2), unit)


def test_compression_ratio() -> None:
    m = tiny_model(downsample_factor=8, codebook_size=512)
    assert m.compression_ratio(384) == pytest.approx(2 * 11 * 8 / 9)
    assert m.compression_ratio(384, 360 / 128) == pytest.approx(2 * 11 * 8 / 9 * 360 / 128)  # the MIT-BIH record


@pytest.mark.parametrize("window", [100, 7, 0])
def test_compression_ratio_of_a_window_encode_cannot_code_is_refused(window: int) -> None:
    """100 samples at a factor of 8 were counted as 12 codes, a ratio of 20.4 for a window no coding gives (encode
    refuses it; 96 and 104 samples code at 19.6); fewer than 8 samples divided by zero codes."""
    m = tiny_model(downsample_factor=8, codebook_size=512)
    with pytest.raises(ValueError, match=f"positive multiple of 8 samples \\(downsample_factor\\), got {window}"):
        m.compression_ratio(window)


def test_decode_of_encode_matches_forward_in_eval() -> None:
    torch.manual_seed(0)
    m = tiny_model()
    x = torch.randn(2, 64, 2)
    m.train()
    m(x)  # initialises the codebook from data
    m.eval()
    with torch.no_grad():
        x_hat, _ = m(x)
        assert torch.allclose(m.decode(m.encode(x)), x_hat, atol=1e-5)


def test_coding_leaves_the_codebooks_as_they_are_and_only_training_moves_them() -> None:
    """Only a training-mode forward (quantize) updates codebooks, EMA statistics, usage and the restart reservoir:
    an eval-mode forward, and encode/decode in either mode (nearest codes, no EMA), leave every buffer as it was,
    so coding a forecast's context never moves the shipped codebooks."""
    torch.manual_seed(0)
    m = tiny_model(num_quantizers=2, window_gain=True, restart_every=1)
    x = torch.randn(4, 64, 2)
    m.train()
    m(x)
    before = {k: v.clone() for k, v in m.named_buffers()}

    def changed() -> list[str]:
        return [k for k, v in m.named_buffers() if not torch.equal(v, before[k])]
    for mode in (m.eval, m.train):
        mode()
        unit = m.unit(x)
        m.decode(m.encode(x, unit), unit), m.decode_latent(m.encode_latent(x, unit), unit)
        assert changed() == [], mode
    m.eval()
    m(x)
    assert changed() == []
    m.train()
    m(x)
    assert {"quantizer.codebook", "quantizer.ema_count", "residual.0.codebook", "quantizer.recent"} <= set(changed())


def test_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    m = tiny_model()
    t = torch.linspace(0, 4 * math.pi, 128)
    x = torch.stack([torch.sin(t * (1 + i / 8)) for i in range(8)])[:, :, None].repeat(1, 1, 2) * 0.5
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    first = None
    for _ in range(60):
        _, losses = m(x)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        first = first if first is not None else losses["recon"].item()
    assert losses["recon"].item() < 0.5 * first


def test_codebook_initialised_from_data_and_dead_codes_restart() -> None:
    torch.manual_seed(0)
    q = VectorQuantizer(16, 4, decay=0.9, commitment=0.25, dead_threshold=1.0, restart_every=0)
    z = torch.randn(2, 4, 50) + 5.0  # data far from the random initial codebook
    q.train()
    q(z)
    assert bool(q.initialized)
    assert q.codebook.mean().item() == pytest.approx(5.0, abs=0.5)
    q.window_usage.zero_()
    q.window_usage[:4] = 10  # only four codes used since the last check
    before = q.codebook.clone()
    assert q.restart_dead(1.0) == 12
    assert torch.equal(q.codebook[:4], before[:4])
    assert not torch.equal(q.codebook[4:], before[4:])
    stats = q.end_epoch()
    assert stats["restarted"] == 12 and 0 < stats["usage"] <= 1 and stats["perplexity"] >= 1


def test_ema_updates_move_codes_toward_data() -> None:
    torch.manual_seed(0)
    q = VectorQuantizer(4, 2, decay=0.5, commitment=0.25, restart_every=0)
    z = torch.randn(1, 2, 100)
    q.train()
    q(z)
    for _ in range(3):
        _, codes, _ = q(z + 3.0)
    used = q.codebook[codes.unique()]
    assert used.mean().item() > 2.0  # data mean is 3, the initial codebook's about 0


def test_residual_codebooks_code_what_the_first_left() -> None:
    torch.manual_seed(0)
    m = tiny_model(num_quantizers=3)
    x = torch.randn(4, 64, 2)
    m.train()
    m(x)  # initialises every level's codebook from data (level q from the residual of the ones before)
    m.eval()
    codes = m.encode(x)
    assert codes.shape == (4, 16, 3) and int(codes.max()) < 32
    with torch.no_grad():
        x_hat, _ = m(x)
        assert torch.allclose(m.decode(codes), x_hat, atol=1e-5)
        z = m.encode_latent(x).permute(0, 2, 1)
        errors = [(z - sum(q.codebook[codes[..., i]] for i, q in enumerate(m.quantizers[:k]))).pow(2).mean()
                  for k in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]  # each level removes part of what is left
    assert m.compression_ratio(64) == pytest.approx(2 * 11 * 4 / (3 * 5))
    with pytest.raises(ValueError, match="2 codebook levels, the model 3"):
        m.decode(codes[..., :2])
    stats = m.end_epoch()
    assert {"perplexity", "usage", "perplexity_2", "usage_3"} <= set(stats)


def test_one_codebook_keeps_the_shipped_layout() -> None:
    m = tiny_model()
    assert not any(k.startswith("residual") for k in m.state_dict())
    assert m.encode(torch.randn(2, 64, 2)).shape == (2, 16)


def test_window_gain_codes_quiet_and_loud_windows_alike() -> None:
    """With window_gain a window and its copy at a sixteenth of the amplitude get the same codes, and
    the reconstruction scales with it: the same relative error (PRDN) for quiet and loud patients."""
    torch.manual_seed(0)
    m = tiny_model(window_gain=True)
    x = torch.randn(3, 64, 2) * torch.tensor([1.0, 0.3])
    m.train()
    m(x)
    m.eval()
    loud, quiet = x * 2.0, x * 2.0 ** -3        # whole quarter octaves, so the gains scale exactly
    assert torch.equal(m.encode(loud), m.encode(quiet))
    assert torch.allclose(m.unit(loud), 16 * m.unit(quiet))
    with torch.no_grad():
        x_hat_loud, x_hat_quiet = m(loud)[0], m(quiet)[0]
        assert torch.allclose(x_hat_loud, 16 * x_hat_quiet, rtol=1e-4, atol=1e-6)
        assert torch.allclose(m.decode(m.encode(loud), m.unit(loud)), x_hat_loud, atol=1e-5)
    with pytest.raises(ValueError, match="pass unit"):
        m.decode(m.encode(loud))
    # 16 code steps x 5 bits and two 6-bit gains code 64 samples x 2 leads x 11 bits
    assert m.compression_ratio(64) == pytest.approx(2 * 11 * 64 / (16 * 5 + 12))


def test_codebook_learns_in_float32_under_mixed_precision() -> None:
    """Under autocast the encoder hands the quantizer half-precision latents; the k-means init, distances and
    EMA statistics still run in float32 (bfloat16 on the CPU stands in for a GPU's float16)."""
    torch.manual_seed(0)
    model = tiny_model().train()
    x = 0.3 * torch.randn(4, 128, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, losses = model(x)
    losses["loss"].mean().backward()
    q = model.quantizers[0]
    assert bool(q.initialized) and q.codebook.dtype == q.ema_count.dtype == torch.float32
    assert int(q.epoch_usage.sum()) == 4 * 128 // 4       # every latent frame counted, exactly


def test_codes_under_mixed_precision_are_the_float32_codes() -> None:
    """encode under autocast ran its encoder and distances in bfloat16 and gave other codes than the Transformer
    learnt from (9% of the shipped forecaster's on validation windows); nearest_codes of half-precision latents too."""
    torch.manual_seed(0)
    model = tiny_model(num_quantizers=2, codebook_size=256).train()
    x = 0.3 * torch.randn(64, 128, 2)
    model(x)                    # the codebook from data: codes close together, as a trained model's
    model.eval()
    with torch.no_grad():
        codes, z = model.encode(x), model.encode_latent(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside, of_half = model.encode(x), model.nearest_codes(z.bfloat16())
    assert torch.equal(inside, codes)
    assert torch.equal(of_half, model.nearest_codes(z.bfloat16().float()))


def test_no_plot_windows_draw_no_plot(tmp_path) -> None:
    """train.plot_windows 0 is allowed: the epoch's plot is left out, not a crash in matplotlib."""
    from vqvae_train import plot_fixed_windows
    plot_fixed_windows(tiny_model(), torch.zeros(0, 64, 2), 128, tmp_path / "r.png", "none")
    assert not (tmp_path / "r.png").exists()


def test_a_data_parallel_replica_knows_its_device() -> None:
    """nn.DataParallel's replicas hold their weights as plain tensors, not parameters(), and keep their buffers:
    vq.device must still answer (the CRPS fine-tuning's replicas encode drafts with it)."""
    replica = tiny_model()
    for module in replica.modules():        # what torch.nn.parallel.replicate makes of every module
        for name, p in list(module._parameters.items()):
            del module._parameters[name]
            setattr(module, name, p.detach())
    assert next(replica.parameters(), None) is None and replica.device == torch.device("cpu")
    assert replica.encode(torch.randn(1, 64, 2)).shape == (1, 16)


def test_the_vqvae_does_not_train_under_data_parallel(monkeypatch) -> None:
    from paths import UserError
    from training import Runtime
    from vqvae_train import check_not_data_parallel
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UserError, match="nn.DataParallel.*torchrun"):
        check_not_data_parallel(Runtime(torch.device("cuda")))
    check_not_data_parallel(Runtime(torch.device("cuda:0")))
    check_not_data_parallel(Runtime(torch.device("cuda:0"), 0, 2))


def test_codes_in_use_are_not_restarted_and_perplexity_counts_codes():
    torch.manual_seed(0)
    q = VectorQuantizer(4, 2, decay=0.9, commitment=0.25, dead_threshold=1.0, restart_every=1)
    centres = torch.tensor([[5.0, 0], [-5, 0], [0, 5], [0, -5]])
    z = (centres.repeat(25, 1) + 0.1 * torch.randn(100, 2)).T[None]       # [1, 2, 100]: four clusters
    q.train()
    q(z)                                                                  # k-means init
    with torch.no_grad():                                                 # one code per cluster
        q.codebook.copy_(centres), q.ema_sum.copy_(centres), q.ema_count.fill_(1.0)
    q.end_epoch()
    for _ in range(3):
        q(z)
    stats = q.end_epoch()
    assert stats["restarted"] == 0 and stats["usage"] == 1.0
    assert stats["perplexity"] == pytest.approx(4.0, rel=1e-3)            # four codes used alike
    q.epoch_usage[:2] = 10.0                                              # two of four codes, equally
    assert q.end_epoch()["perplexity"] == pytest.approx(2.0, rel=1e-3)


def test_bit_rate_is_the_codes_bits_per_second_whatever_the_records_rate():
    """bits/s is what coding one second takes (codes and gains over the window's duration): the rate the
    records were stored at changes the compression ratio, not the bit rate."""
    m = tiny_model(downsample_factor=8, codebook_size=512, num_quantizers=2, window_gain=True)
    window, fs = 384, 128
    code_bits = window // 8 * 2 * math.log2(512) + 2 * GAIN_BITS
    for record_fs in (None, 128.0, 360.0):
        c = vqvae_eval.compression(m, window, fs, record_fs and SourceSamples.uniform(record_fs))
        assert c["bits_per_second"] == pytest.approx(code_bits / (window / fs))
    assert vqvae_eval.compression(m, window, fs, SourceSamples.uniform(360.0))["compression_ratio"] == pytest.approx(
        vqvae_eval.compression(m, window, fs)["compression_ratio"] * 360 / 128)


def test_the_compression_ratio_counts_the_bits_the_records_hold():
    """A database of 16-bit records was counted as MIT-BIH's 11-bit ones: both ratios count the records' bits,
    the bit rate none; without them (an older meta.json) MIT-BIH's 11 are taken, and reconstruction.md says so."""
    m = tiny_model(downsample_factor=8, codebook_size=512)
    window, fs = 384, 128
    mitbih, own = (vqvae_eval.compression(m, window, fs, SourceSamples.uniform(360.0, bits)) for bits in (None, 16.0))
    assert (mitbih["sample_bits"], mitbih["sample_bits_assumed"], own["sample_bits"], own["sample_bits_assumed"]
            ) == (11, True, 16.0, False)
    for key in ("compression_ratio", "compression_ratio_model_rate"):
        assert own[key] == pytest.approx(mitbih[key] * 16 / 11)
    assert own["bits_per_second"] == pytest.approx(mitbih["bits_per_second"])
    assert vqvae_eval.compression(m, window, fs, SourceSamples.uniform(360.0, 11.0)) == {
        **mitbih, "sample_bits": 11.0, "sample_bits_assumed": False}
    x = torch.stack([torch.sin(torch.arange(32) / 3.0)] * 2, -1).expand(2, -1, -1).contiguous()
    data = {"signals": x, "record": torch.tensor([0, 0]), "records": ["a"], "fs": 128}
    for bits, said in ((None, "(11-bit samples at 360 Hz; 10.0 against 11-bit samples at the model's 128 Hz)"),
                       (16.0, "(16-bit samples at 360 Hz; 14.5 against 16-bit samples at the model's 128 Hz)")):
        report = vqvae_eval.reconstruction_report(OffsetCoder(0.1), data, SourceSamples.uniform(360.0, bits))
        report.update(split="test", checkpoint="c.pt", checkpoint_sha256="0123", git_commit="abc")
        line = vqvae_eval.report_lines(report, data)[-1]
        assert said in line
        assert line.endswith("11 bits a sample (MIT-BIH's) are assumed: the prepared meta.json gives no bits of these "
                             "records (prepare them again to count their own)") == (bits is None), line


def test_the_compression_line_tells_records_of_several_rates_and_samples_a_frame_as_they_are(tmp_path):
    """reconstruction.md said '11-bit samples at 476.667 Hz' of records at 360 and 500 Hz (a mean rate told as
    theirs) and '44-bit samples at 250 Hz' of '212x4' leads (4 samples of 11 bits a frame): records that differ
    get the bit rate a lead the ratio counts and the ranges; one rate and bits, the samples as they are."""
    records = {"a": {"fs_in": 360.0, "bits": [11, 11], "samples_per_frame": [1, 1]},
               "b": {"fs_in": 500.0, "bits": [16, 16], "samples_per_frame": [1, 1]},
               "x4": {"fs_in": 250.0, "bits": [44, 44], "samples_per_frame": [4, 4]},
               "f": {"fs_in": 250.0, "bits": [44, 11], "samples_per_frame": [4, 1]},
               "c": {"fs_in": 360.0, "bits": [16, 16], "samples_per_frame": [1, 1]}}
    (tmp_path / "meta.json").write_text(json.dumps({"records": records}))
    x = torch.stack([torch.sin(torch.arange(32) / 3.0)] * 2, -1).expand(2, -1, -1).contiguous()
    data = {"signals": x, "record": torch.tensor([0, 0]), "records": ["a"], "fs": 128}
    for held, said in (
            (["a", "a", "b"], "compression ratio 37.7 against the records (5,307 bit/s a lead on average: 11- to "
                              "16-bit samples at 360 to 500 Hz; 11.9 against samples of their mean 13 bits at the "
                              "model's 128 Hz)"),
            (["x4"], "compression ratio 78.1 against the records (11-bit samples at 1000 Hz; 10.0 against 11-bit "
                     "samples at the model's 128 Hz)"),
            (["f"], "compression ratio 48.8 against the records (6,875 bit/s a lead on average: 11-bit samples at "
                    "250 to 1000 Hz; 10.0 against 11-bit samples at the model's 128 Hz)"),
            (["a", "c"], "compression ratio 34.5 against the records (4,860 bit/s a lead on average: 11- to 16-bit "
                         "samples at 360 Hz; 12.3 against samples of their mean 13.5 bits at the model's 128 Hz)")):
        report = vqvae_eval.reconstruction_report(OffsetCoder(0.1), data, source_samples(held, tmp_path))
        report.update(split="test", checkpoint="c.pt", checkpoint_sha256="0123", git_commit="abc")
        line = vqvae_eval.report_lines(report, data)[-1]
        assert said in line and not line.endswith("(prepare them again to count their own)"), line
        s = report["summary"]
        assert s["compression_ratio"] == pytest.approx(10 * s["source_fs"] * s["sample_bits"] / (11 * 128))


def test_a_reconstruction_report_in_a_session_with_another_default_device_is_the_same():
    """torch.set_default_device("cuda"), as GPU notebooks set it: reconstruction_report's code counts were made on the
    default device and met each batch's counts on the CPU ('Expected all tensors to be on the same device'). 'meta'
    stands in for the GPU this machine lacks: any tensor made there fails."""
    torch.manual_seed(0)
    m = VQVAE(ModelConfig(downsample_factor=4, channels=8, res_blocks=1, latent_dim=4, codebook_size=8,
                          has_attention=False)).eval()
    data = {"signals": torch.randn(3, 32, 2), "record": torch.tensor([0, 0, 1]), "records": ["a", "b"], "fs": 128}
    expected = vqvae_eval.reconstruction_report(m, data)
    torch.set_default_device("meta")
    try:
        got = vqvae_eval.reconstruction_report(m, data)
    finally:
        torch.set_default_device(None)
    assert got == expected and expected["summary"]["usage"] > 0


def test_the_readmes_compression_and_bit_rate_are_the_default_configs():
    """README and EXPERIMENTS report the default coder at CR 16.4 against the 360 Hz records and 482 bit/s on 6 s
    windows (16.36 and 484 on 3 s, 5.8 against 128 Hz samples): 16 code steps a second of 3 x 10 bits, and two
    6-bit gains a window. Worked out from config_vqvae.json, so a changed default cannot leave them standing."""
    cfg = load_config()
    m = VQVAE(cfg.model)
    six, three = (vqvae_eval.compression(m, n, cfg.data.samples_per_second, SourceSamples.uniform(360.0))
                  for n in (cfg.data.total_samples, cfg.data.window_samples))
    assert cfg.data.total_samples / cfg.data.samples_per_second == 6.0
    assert (round(six["compression_ratio"], 1), round(six["bits_per_second"]), round(six["compression_ratio_model_rate"], 1)
            ) == (16.4, 482, 5.8)
    assert (round(three["compression_ratio"], 2), round(three["bits_per_second"])) == (16.36, 484)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "compression ratio of 16.4 against the 360 Hz records (482 bit/s)" in readme
    assert "16.4 for the defaults on 6 s\nwindows (16.36 on 3 s windows" in readme


class OffsetCoder:
    """A 'VQ-VAE' whose reconstruction is its input plus `offset` mV on every sample of both leads."""

    def __init__(self, offset: float):
        self.offset, self.cfg, self.quantizers = offset, SimpleNamespace(codebook_size=4), [None]
        self.compression_ratio = lambda window, ratio=1.0, sample_bits=11: 10.0 * ratio * sample_bits / 11

    def parameters(self):      # where reconstruction_report finds the model's device
        return iter([torch.zeros(1)])

    def unit(self, x):
        return None

    def encode(self, x, unit):
        self.x = x
        return torch.zeros(len(x), x.shape[1] // 8, dtype=torch.long)

    def decode(self, codes, unit):
        return self.x + self.offset


def test_reconstruction_report_of_a_known_error():
    """A 0.1 mV error on every sample of both leads: MSE 0.01 mV^2, PRD 0.1 mV over the signal's RMS, PRDN
    0.1 mV over its SD about each window's mean (here 1 + 0.5 sin: RMS 1.061, SD 0.354 mV)."""
    t = torch.arange(256) / 128
    wave = 1 + 0.5 * torch.sin(2 * math.pi * 2 * t)          # whole periods per window: mean 1 mV exactly
    x = torch.stack([wave, wave], -1).expand(6, -1, -1).contiguous().float()
    data = {"signals": x, "record": torch.tensor([0, 0, 0, 1, 1, 1]), "records": ["a", "b"], "fs": 128}
    report = vqvae_eval.reconstruction_report(OffsetCoder(0.1), data)
    for rec in report["per_record"].values():
        assert rec["mse_mv2"] == pytest.approx(0.01, rel=1e-4)
        assert rec["prd"] == pytest.approx(100 * 0.1 / math.sqrt(1 + 0.125), rel=1e-3)
        assert rec["prdn"] == pytest.approx(100 * 0.1 / math.sqrt(0.125), rel=1e-3)



def test_reconstruction_summary_is_the_mean_over_the_records_with_windows():
    """Each record weighs once in the summary (not each window, not the median); a record of the split without
    windows is left out (it would make every mean NaN); windows land in their records across batches; PRDN takes
    each lead about its own mean (lead 2 sits 1 mV above lead 1, so a mean over both leads would inflate it)."""
    t = torch.arange(256) / 128
    sine = torch.sin(2 * math.pi * 2 * t)
    amp = (1.0, 2.0, 4.0)
    rec = torch.tensor([0, 1, 1, 1, 2, 2, 0])          # 2, 3 and 2 windows, split over batches of 2
    x = torch.stack([torch.stack([amp[r] * sine, 1 + amp[r] * sine], -1) for r in rec.tolist()]).float()
    data = {"signals": x, "record": rec, "records": ["a", "b", "c", "empty"], "fs": 128}
    report = vqvae_eval.reconstruction_report(OffsetCoder(0.1), data, batch=2)
    assert list(report["per_record"]) == ["a", "b", "c"]
    prdn = [100 * 0.1 / math.sqrt(a * a / 2) for a in amp]
    prd = [100 * 0.1 / math.sqrt((1 + a * a) / 2) for a in amp]
    for v, want_prdn, want_prd in zip(report["per_record"].values(), prdn, prd):
        assert v["prdn"] == pytest.approx(want_prdn, rel=1e-3) and v["prd"] == pytest.approx(want_prd, rel=1e-3)
    s = report["summary"]
    assert s["records"] == 3 and s["windows"] == 7
    assert s["prdn"] == pytest.approx(np.mean(prdn), rel=1e-3) and s["prd"] == pytest.approx(np.mean(prd), rel=1e-3)


class CodeCoder(OffsetCoder):
    """An exact 'VQ-VAE' with two codebooks whose codes are `codes` [windows, frames, 2]."""

    def __init__(self, codes):
        super().__init__(0.0)
        self.quantizers, self.codes = [None, None], torch.tensor(codes)

    def encode(self, x, unit):
        self.x = x
        return self.codes[:len(x)]


@pytest.mark.parametrize("first, perplexity, usage", [
    ([[0, 0, 1, 1], [0, 0, 1, 1]], 2.0, 0.5),                       # two of four codes, equally
    ([[0, 0, 0, 0], [0, 0, 0, 2]], math.exp(-(7 / 8 * math.log(7 / 8) + 1 / 8 * math.log(1 / 8))), 0.5)])
def test_reconstruction_report_codebook_health_is_the_first_codebooks(first, perplexity, usage):
    """Perplexity (exp of the entropy in nats) and usage (codes used at least once, over the codebook size) count the
    first codebook's codes, not the residual ones (here all code 3); codebooks counts both."""
    codes = [[[c, 3] for c in window] for window in first]
    x = torch.stack([torch.sin(torch.arange(32) / 3.0)] * 2, -1).expand(2, -1, -1).contiguous()
    data = {"signals": x, "record": torch.tensor([0, 0]), "records": ["a"], "fs": 128}
    s = vqvae_eval.reconstruction_report(CodeCoder(codes), data)["summary"]
    assert s["perplexity"] == pytest.approx(perplexity, rel=1e-4)
    assert s["usage"] == usage and s["codebooks"] == 2 and s["codebook_size"] == 4


def test_reconstruction_md_puts_each_number_in_its_column_and_unit():
    """reconstruction.md: per-record MSE, PRD, PRDN in that order, the mean row from the summary, the window in
    seconds, usage in percent of the codebook's size and both sampling rates the compression ratios are counted
    against. Its codebook figures are these windows' (the demo's 17% used beside codebook_health.png's 27% of the
    same checkpoint's last training epoch read as a contradiction)."""
    summary = {"records": 1, "windows": 3, "mse_mv2": 0.02, "prd": 11.5, "prdn": 31.25, "perplexity": 20.0,
               "usage": 0.75, "compression_ratio": 112.5, "source_fs": 360.0, "compression_ratio_model_rate": 20.0,
               "bits_per_second": 70.4, "codebooks": 2, "codebook_size": 64, "sample_bits": 11,
               "sample_bits_assumed": False, "source_fs_range": [360.0, 360.0], "sample_bits_range": [11, 11]}
    report = {"split": "test", "checkpoint": "c.pt", "checkpoint_sha256": "0123", "git_commit": "abc",
              "summary": summary, "per_record": {"109": {"mse_mv2": 0.01, "prd": 12.5, "prdn": 30.25}},
              "leads": {"109": ["MLII", "V1"]}}
    lines = vqvae_eval.report_lines(report, {"signals": torch.zeros(3, 320, 2), "fs": 64})
    assert "`c.pt` (sha256 0123), 1 record, 3 windows of 5 s, git abc" in lines[2]
    assert "| 109 | MLII, V1 | 0.01000 | 12.50 | 30.25 |" in lines
    assert "| **mean over records** | | **0.02000** | **11.50** | **31.25** |" in lines
    del report["leads"]             # a meta.json from before it kept them
    assert "| 109 | ? | 0.01000 | 12.50 | 30.25 |" in vqvae_eval.report_lines(report, {"signals": torch.zeros(3, 320,
                                                                                                        2), "fs": 64})
    assert ("first codebook on these windows (training's codebook_health.png counts its epochs' own): perplexity "
            "20.0, codes used 75% of 64; compression ratio 112.5 against the records (11-bit samples at 360 Hz; "
            "20.0 against 11-bit samples at the model's 64 Hz), 70 bit/s in 2 codebooks") == lines[-1]


def test_reconstruction_md_gives_a_window_of_a_fraction_of_a_second_as_it_is():
    """A 250 Hz config takes a 3.2 s context (README, Configuration): its 6.4 s windows are not called 6 s."""
    summary = {"records": 1, "windows": 3, "mse_mv2": 0.02, "prd": 11.5, "prdn": 31.25, "perplexity": 20.0,
               "usage": 0.75, "compression_ratio": 16.0, "source_fs": 250.0, "compression_ratio_model_rate": 16.0,
               "bits_per_second": 70.4, "codebooks": 2, "codebook_size": 64, "sample_bits": 16,
               "sample_bits_assumed": False, "source_fs_range": [250.0, 250.0], "sample_bits_range": [16, 16]}
    report = {"split": "test", "checkpoint": "c.pt", "checkpoint_sha256": "0123", "git_commit": "abc",
              "summary": summary, "per_record": {}}
    lines = vqvae_eval.report_lines(report, {"signals": torch.zeros(3, 1600, 2), "fs": 250})
    assert "3 windows of 6.4 s," in lines[2]


def test_the_newest_checkpoint_of_a_run_still_training_is_said(tmp_path, capsys):
    """A VQ-VAE training started after the last finished one writes the newest best.pt from its first epoch on: a
    forecaster trained meanwhile without --vqvae took that model, half trained and changing, without a word."""
    import os

    for i, (name, epoch) in enumerate((("vqvae-done", 5), ("vqvae-running", 2))):
        (tmp_path / name).mkdir()
        for file in ("last.pt", "best.pt"):
            torch.save({"epoch": epoch, "config": {"train": {"epochs": 5}}}, tmp_path / name / file)
        os.utime(tmp_path / name / "best.pt", (1e9 + i, 1e9 + i))
    running = tmp_path / "vqvae-running" / "best.pt"
    assert vqvae_eval.latest_checkpoint("vqvae", str(tmp_path), flag="--vqvae") == running
    assert capsys.readouterr().err.strip() == (f"note: {running} is of a run at epoch 2 of 5: still training, or "
                                               f"stopped; --vqvae names another checkpoint")
    os.utime(tmp_path / "vqvae-done" / "best.pt")           # the finished run's, newest: nothing to say
    assert vqvae_eval.latest_checkpoint("vqvae", str(tmp_path)) == tmp_path / "vqvae-done" / "best.pt"
    assert capsys.readouterr().err == ""


def next_commands_of(tmp_path: Path, start: int, cfg=load_config()) -> list[str]:
    """next_commands' lines for a run whose first validation window is record 'p00/x' at sample `start`."""
    (tmp_path / "meta.json").write_text(json.dumps({"data_dir": str(tmp_path / "my data")}))
    (tmp_path / "ck run").mkdir(exist_ok=True)
    val = {"records": ["p00/x"], "record": [0], "start": [start], "fs": cfg.data.samples_per_second}
    return vqvae_eval.next_commands(tmp_path / "ck run", cfg, val, str(tmp_path)).splitlines()


def test_a_finished_training_says_what_to_run_next_whatever_config_vqvae_json_holds(tmp_path, monkeypatch):
    """next_commands read config_vqvae.json to tell whether evaluate.py needs --config: one missing or edited into
    invalid JSON while a forecaster trained stopped the finished run in its closing lines with an error (exit 1).
    evaluate.py cannot go without --config then either: the command names the VQ-VAE's, written beside the
    checkpoints."""
    import shlex

    import hyper_params

    cfg = load_config()
    for text in (None, "{"):
        bad = tmp_path / f"config_vqvae_{text is None}.json"
        if text is not None:
            bad.write_text(text)
        monkeypatch.setattr(hyper_params, "DEFAULT_CONFIG", bad)
        own = tmp_path / "ck run" / "vqvae_config.json"
        assert next_commands_of(tmp_path, 0, cfg)[1].endswith(f" --config {shlex.quote(str(own))}")
        assert load_config(str(own)) == cfg


def test_the_forecast_command_starts_at_the_plotted_windows_sample(tmp_path) -> None:
    """--start was printed to 6 digits: from 1000 s on (a 30 min record's second half) forecast.py, rounding it to a
    sample, started up to a sample or more off the epoch plots' window (1000.0546875 s printed as 1000.05)."""
    import shlex

    cfg = load_config()
    fs, context = cfg.data.samples_per_second, cfg.data.window_samples
    for start in (0, 1000 * fs + 7 - context, 86399 * fs + 3 - context):
        fc = shlex.split(next_commands_of(tmp_path, start)[0].removeprefix("forecast with: "))
        assert fc[fc.index("--record") + 1] == str(tmp_path / "my data" / "p00" / "x")
        assert round(float(fc[fc.index("--start") + 1]) * fs) == start + context


def test_the_default_checkpoint_passes_over_run_folders_without_one_and_says_so(tmp_path, capsys):
    """A run killed in its first epoch leaves its folder without best.pt (nothing tidies up after kill -9): the
    newest best.pt is taken, and the newer folders passed over are named, as they are when no best.pt is left."""
    import os

    killed = tmp_path / "vqvae-20260102-000000"
    killed.mkdir()
    (killed / "run.json").write_text("{}")
    (tmp_path / "vqvae-old").mkdir()        # one's own folder, no run's: not said to be a killed run's
    said = rf"\(passed over {re.escape(str(killed))}: no best.pt there, its run still in the first epoch or killed "
    with pytest.raises(vqvae_eval.UserError, match=rf"^no vqvae checkpoint in \S+ {said}before it ended\); train one"):
        vqvae_eval.latest_checkpoint("vqvae", str(tmp_path), flag="--vqvae")
    done = tmp_path / "vqvae-20260101-000000" / "best.pt"
    done.parent.mkdir()
    done.write_bytes(b"")
    os.utime(done, (1e9, 1e9))
    assert vqvae_eval.latest_checkpoint("vqvae", str(tmp_path), flag="--vqvae") == done
    assert capsys.readouterr().err.strip() == (f"note: took {done}, passing over the newer {killed}: no best.pt there, "
                                               f"its run still in the first epoch or killed before it ended; --vqvae "
                                               f"names a checkpoint")
    os.utime(killed, (1e9 - 1, 1e9 - 1))        # an older one: the newest best.pt is what was asked for
    assert vqvae_eval.latest_checkpoint("vqvae", str(tmp_path)) == done and capsys.readouterr().err == ""


def test_a_resume_in_new_folders_names_the_best_pt_there_is(tmp_path) -> None:
    """A resume whose run's results folder was gone trains in new folders, writing best.pt there only once it beats
    the resumed best: until then the closing commands named that folder's best.pt, a file that is not there, where
    the closing line says 'best.pt is epoch 2's', the resumed run's."""
    import shlex

    old, new = tmp_path / "ck" / "old", tmp_path / "ck" / "new"
    old.mkdir(parents=True)
    new.mkdir()
    (old / "best.pt").write_bytes(b"")
    (new / "last.pt").write_bytes(b"")
    cfg = load_config()
    val = {"records": ["x"], "record": [0], "start": [0], "fs": cfg.data.samples_per_second}
    checkpoint = [shlex.split(line.split(": ", 1)[1])[3] for line in vqvae_eval.next_commands(
        new, cfg, val, str(tmp_path), {"ckpt_dir": str(old)}).splitlines()]
    assert checkpoint == [str(old / "best.pt")] * 2
    (new / "best.pt").write_bytes(b"")          # it beat the resumed best
    assert str(new / "best.pt") in vqvae_eval.next_commands(new, cfg, val, str(tmp_path), {"ckpt_dir": str(old)})


def test_a_run_folder_dropped_while_the_newest_checkpoint_is_looked_for_is_no_error(tmp_path, monkeypatch):
    """A run stopped in its first epoch drops its folder (training_main): dropped between latest_checkpoint's listing
    of the folders without best.pt and its look at their times, it stopped evaluate.py and the trainers taking the
    newest checkpoint in stat's FileNotFoundError."""
    import os
    import shutil

    dropped = tmp_path / "vqvae-20260102-000000"
    listed = vqvae_eval.without_checkpoint

    def listed_then_dropped(*args):
        out = listed(*args)
        shutil.rmtree(dropped)
        return out
    monkeypatch.setattr(vqvae_eval, "without_checkpoint", listed_then_dropped)
    dropped.mkdir()
    with pytest.raises(vqvae_eval.UserError, match=r"^no vqvae checkpoint in \S+; train one first"):
        vqvae_eval.latest_checkpoint("vqvae", str(tmp_path))
    done = tmp_path / "vqvae-20260101-000000" / "best.pt"
    done.parent.mkdir()
    done.write_bytes(b"")
    os.utime(done, (1e9, 1e9))
    dropped.mkdir()
    assert vqvae_eval.latest_checkpoint("vqvae", str(tmp_path)) == done


def test_the_default_checkpoint_is_the_newest_by_time_not_by_name(tmp_path):
    """latest_checkpoint picks the run written last (its best.pt's time), whatever the folder names sort as."""
    import os

    for i, name in enumerate(("vqvae-b", "vqvae-c", "vqvae-a")):     # a written last, c in between
        (tmp_path / name).mkdir()
        (tmp_path / name / "best.pt").write_bytes(b"")
        os.utime(tmp_path / name / "best.pt", (1e9 + i, 1e9 + i))
    assert vqvae_eval.latest_checkpoint("vqvae", str(tmp_path)) == tmp_path / "vqvae-a" / "best.pt"
    with pytest.raises(vqvae_eval.UserError, match="no transformer checkpoint"):
        vqvae_eval.latest_checkpoint("transformer", str(tmp_path))


def test_nearest_is_the_first_code_at_the_least_exact_distance() -> None:
    """nearest's in-place distances pick what exact (float64) distances pick, and among equal codes the first."""
    torch.manual_seed(0)
    q = VectorQuantizer(64, 8, decay=0.9, commitment=0.25, restart_every=0)
    q.codebook[40] = q.codebook[7]                              # a duplicate: the first of the two wins
    flat = torch.cat([torch.randn(500, 8) * 0.1, q.codebook[[7, 40, 3]] + 1e-4])
    assert torch.equal(q.nearest(flat), torch.cdist(flat.double(), q.codebook.double()).argmin(1))
    assert q.nearest(flat)[-3:].tolist() == [7, 7, 3]


def test_window_gain_is_the_rms_to_the_nearest_quarter_octave():
    """Each lead's gain lies on the quarter-octave grid and within an eighth of an octave of the window's RMS
    (the nearest grid value), so the shipped VQ-VAE sees its inputs at the scale it was trained at."""
    m = tiny_model(window_gain=True).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 64, 2, generator=g) * torch.exp2(torch.rand(200, 1, 2, generator=g) * 8 - 5)
    rms = x.pow(2).mean(1, keepdim=True).sqrt()
    octaves = torch.log2(m.unit(x) / rms)
    steps = torch.log2(m.unit(x)) * GAIN_STEPS
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    assert octaves.abs().max() <= 1 / (2 * GAIN_STEPS) + 1e-5


def test_commitment_loss_is_weighted_by_the_commitment_cost():
    """The same weights with commitment_cost 0, 0.5 and 1: the loss is the reconstruction alone at 0, and its
    commitment term scales with the cost (the config's beta of van den Oord et al.)."""
    torch.manual_seed(0)
    x = torch.randn(4, 64, 2)
    losses = {}
    for beta in (0.0, 0.5, 1.0):
        torch.manual_seed(1)
        m = tiny_model(num_quantizers=2, commitment_cost=beta).eval()
        with torch.no_grad():
            losses[beta] = m(x)[1]
    assert float(losses[0.0]["loss"]) == float(losses[0.0]["recon"])
    assert float(losses[1.0]["commitment"]) > 0
    assert float(losses[0.5]["commitment"]) == pytest.approx(0.5 * float(losses[1.0]["commitment"]), rel=1e-5)


def test_batch_perplexity_is_the_first_codebooks():
    """The perplexity a training step logs is that of the coarse (first) codebook's codes in the batch, the
    vocabulary the Transformer reads first: exp(entropy) of their histogram."""
    torch.manual_seed(0)
    m = tiny_model(num_quantizers=3)
    x = torch.randn(8, 64, 2)
    m.train()
    m(x)                       # initialises the codebooks from the data
    m.eval()
    with torch.no_grad():
        got = float(m(x)[1]["perplexity"])
        first = m.encode(x)[..., 0].flatten()
    p = torch.bincount(first, minlength=32).float() / first.numel()
    want = float(torch.exp(-(p * torch.log(p + 1e-10)).sum()))
    assert got == pytest.approx(want, rel=1e-4)


def test_gradients_pass_the_codes_straight_through_and_every_level_commits() -> None:
    """The code lookup has no gradient: the quantizer passes the decoder's gradient to the encoder output
    unchanged (straight-through), and the commitment loss pulls the encoder output towards its codes, at every
    residual level: gradient 2 beta (r_q - e_q) / N summed over the levels' residuals r_q and codes e_q."""
    torch.manual_seed(0)
    q = VectorQuantizer(8, 4, decay=0.9, commitment=0.25, restart_every=0).eval()
    z = torch.randn(2, 4, 5, requires_grad=True)
    w = torch.randn(2, 4, 5)
    (g,) = torch.autograd.grad((q(z)[0] * w).sum(), z)
    assert torch.equal(g, w)
    m = tiny_model(num_quantizers=3, commitment_cost=0.25).eval()
    z = torch.randn(2, 8, 5, requires_grad=True)
    (g,) = torch.autograd.grad(m.quantize(z)[1]["commitment"], z)
    want, rest = torch.zeros_like(z), z.detach()
    for vq in m.quantizers:
        e = vq.codebook[vq.nearest(rest.permute(0, 2, 1).reshape(-1, 8))].view(2, 5, 8).permute(0, 2, 1)
        want, rest = want + 2 * 0.25 * (rest - e) / z.numel(), rest - e
    assert torch.allclose(g, want, atol=1e-7)


def test_restarted_codes_come_from_recent_encoder_outputs_and_stay_there() -> None:
    """A code used fewer than `threshold` times (not one used exactly that often) restarts on a recent encoder
    output, with fresh EMA statistics, so the next update leaves it there while nothing is near; the usage
    window starts again at each check."""
    torch.manual_seed(0)
    q = VectorQuantizer(4, 2, decay=0.9, commitment=0.25, restart_every=0)
    centres = torch.tensor([[5.0, 0], [-5, 0], [0, 5], [0, -5]])
    z = (centres.repeat(25, 1) + 0.1 * torch.randn(100, 2)).T[None]
    q.train()
    q(z)
    with torch.no_grad():
        q.codebook.copy_(centres), q.ema_sum.copy_(centres), q.ema_count.fill_(1.0)
        q.window_usage.copy_(torch.tensor([1.0, 0.0, 5.0, 1.0]))
        q.recent.fill_(20.0)                              # the reservoir: far from every cluster
    assert q.restart_dead(1.0) == 1
    assert torch.equal(q.codebook[1], torch.tensor([20.0, 20.0])) and q.window_usage.sum() == 0
    q(z)                                                  # nothing is near the restarted code
    assert torch.allclose(q.codebook[1], torch.tensor([20.0, 20.0]), atol=1e-3)
    assert q.window_usage.sum() == 100                    # the frames since the check, no more


def test_dead_codes_are_checked_every_restart_every_updates() -> None:
    """restart_every N: the check runs on the N-th, 2N-th, ... EMA update, not before."""
    torch.manual_seed(0)
    q = VectorQuantizer(4, 2, decay=0.9, commitment=0.25, dead_threshold=1.0, restart_every=3)
    centres = torch.tensor([[5.0, 0], [-5, 0], [0, 5], [50, 50]])
    z = (centres[:3].repeat(20, 1) + 0.1 * torch.randn(60, 2)).T[None]     # nothing near the last code
    q.train()
    q(z)                                                                    # update 1 (k-means init)
    with torch.no_grad():
        q.codebook.copy_(centres), q.ema_sum.copy_(centres), q.ema_count.fill_(1.0), q.window_usage.zero_()
    q.end_epoch()
    q(z)
    assert q.end_epoch()["restarted"] == 0                                  # update 2
    q(z)
    assert q.end_epoch()["restarted"] == 1                                  # update 3: the last code


def test_a_single_restarted_number_is_no_nan() -> None:
    """With latent_dim 1 one dead code restarts on one number, whose std() (the spread of the restart noise) is
    NaN: the code became NaN, nearest picked it for every frame, and training stopped on a NaN loss."""
    torch.manual_seed(0)
    q = VectorQuantizer(4, 1, decay=0.9, commitment=0.25, restart_every=0).train()
    q(torch.randn(2, 1, 20))
    q.window_usage.fill_(5.0)
    q.window_usage[2] = 0.0
    assert q.restart_dead(1.0) == 1
    assert torch.isfinite(q.codebook).all() and torch.isfinite(q.ema_sum).all()
    assert torch.isfinite(q(torch.randn(2, 1, 20))[0]).all()


def test_the_restart_reservoir_holds_the_latest_batches_newest_first() -> None:
    """Each update pushes the batch's encoder outputs to the front of the reservoir and keeps the older ones
    behind them, so a restart draws from recent outputs, not from those seen at initialisation."""
    torch.manual_seed(0)
    q = VectorQuantizer(4, 2, decay=0.9, commitment=0.25, restart_every=0, reservoir=8).train()
    a, b, c = (torch.randn(1, 2, 4) + shift for shift in (0.0, 10.0, 20.0))
    for batch in (a, b, c):
        q(batch)
    rows = {tuple(r) for r in q.recent.tolist()}
    assert rows == {tuple(r) for r in torch.cat([b, c], 2)[0].T.tolist()}
    assert (q.recent[:4] > 15).all() and (q.recent[4:] < 15).all()


def test_the_quantizers_take_the_configs_settings() -> None:
    """Every level's quantizer runs with the config's EMA decay, commitment cost, dead-code threshold and restart
    period (the tiny test configs restart every 5 updates; the class default is 100)."""
    m = tiny_model(num_quantizers=2, ema_decay=0.8, commitment_cost=0.3, dead_code_threshold=2.0, restart_every=7)
    for q in m.quantizers:
        assert (q.decay, q.commitment, q.dead_threshold, q.restart_every) == (0.8, 0.3, 2.0, 7)


def test_recon_loss_is_in_normalised_units() -> None:
    """The reconstruction loss is the MSE after dividing by each lead's scale (the training patients' SD), so a
    quiet lead counts as much as a loud one; the reconstruction itself is in mV."""
    torch.manual_seed(0)
    m = tiny_model().eval()                 # scale [0.5, 0.4] mV
    x = torch.randn(2, 64, 2)
    with torch.no_grad():
        x_hat, losses = m(x)
    scale = torch.tensor([0.5, 0.4])
    assert float(losses["recon"]) == pytest.approx(float(((x_hat - x) / scale).pow(2).mean()), rel=1e-5)
    assert float(losses["recon"]) != pytest.approx(float((x_hat - x).pow(2).mean()), rel=1e-2)


@pytest.mark.parametrize("part", ["encoder", "decoder"])
def test_has_attention_puts_attention_in_the_encoder_and_the_decoder(part: str) -> None:
    """With has_attention both the encoder and the decoder run their attention blocks: changing a block's
    weights changes what they compute."""
    torch.manual_seed(0)
    m = tiny_model(has_attention=True, attention_layers=1).eval()
    x = torch.randn(2, 64, 2)
    with torch.no_grad():
        before = m.decode(m.encode(x)) if part == "decoder" else m.encode_latent(x)
        getattr(m, part).attn.blocks[0].attn.proj.bias.add_(1.0)
        after = m.decode(m.encode(x)) if part == "decoder" else m.encode_latent(x)
    assert not torch.allclose(before, after)


def test_epoch_usage_is_the_share_of_codes_used() -> None:
    """The logged usage counts the codes used at least once in the epoch, over the codebook size."""
    q = VectorQuantizer(4, 2, decay=0.9, commitment=0.25)
    q.epoch_usage[1] = 3.0
    assert q.end_epoch()["usage"] == 0.25


def test_reconstruction_examples_name_their_record_time_and_leads(tmp_path, monkeypatch) -> None:
    """reconstruction_examples.png: each panel says its record, start and lead name (meta.json), not just 'lead 1'."""
    import matplotlib.axes

    from train_results import plot_windows

    data = {"records": ["109", "122"], "record": torch.tensor([0, 1]), "start": torch.tensor([0, 1536]), "fs": 128}
    titles = train_results.window_titles(data, np.array([0, 1]), {"109": ["MLII", "V1"]})
    assert titles == [("record 109 at 0 s, lead 1: MLII", "record 109 at 0 s, lead 2: V1"),
                      ("record 122 at 12 s, lead 1", "record 122 at 12 s, lead 2")]
    drawn = []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, text, *a, **k: drawn.append(text))
    x = np.zeros((2, 64, 2), np.float32)
    plot_windows(x, x, 64.0, tmp_path / "r.png", "validation windows", titles)
    assert drawn == [t for pair in titles for t in pair]


def test_split_reconstruction_examples_name_the_checkpoint(tmp_path, monkeypatch) -> None:
    """vqvae_eval.py --split's reconstruction_examples.png was titled 'validation windows, original vs reconstruction'
    whichever VQ-VAE drew it; --record's names it, and so does this one now."""
    drawn = []
    monkeypatch.setattr(vqvae_eval, "plot_windows", lambda *a: drawn.append(a[4]))
    data = {"signals": torch.zeros(2, 64, 2), "records": ["109"], "record": torch.tensor([0, 0]),
            "start": torch.tensor([0, 64]), "fs": 64}
    vqvae_eval.plot_examples(tiny_model(), data, "validation", str(tmp_path), tmp_path / "r.png",
                             tmp_path / "vqvae-1" / "best.pt")
    checkpoint = tmp_path / "vqvae-1" / "best.pt"
    assert drawn == [f"the VQ-VAE of {checkpoint}: validation windows, original vs reconstruction"]


def test_vqvae_eval_warns_of_records_the_vqvae_saw() -> None:
    """With record lists of one's own, a 'test' split may hold the VQ-VAE's training or validation patients: said,
    record by record; the training split scored as such is no claim of a test."""
    from vqvae_eval import seen_warnings

    meta = {"train_records": ["101", "106"], "validation_records": ["109"]}
    test = seen_warnings(meta, ["100", "106", "109"], "test")
    assert len(test) == 2 and "trained on records 106," in test[0] and "chose its checkpoint on records 109," in test[1]
    assert [w.split(",")[0] for w in seen_warnings(meta, ["106", "109"], "validation")] == [
        "the VQ-VAE trained on records 106"]
    assert seen_warnings(meta, ["101"], "train") == [] and seen_warnings({}, ["101"], "test") == []
    assert "trained on records 201 (the patient of 202)," in seen_warnings({"train_records": ["202"]}, ["201"], "test")[0]


def test_the_reconstruction_report_says_how_its_vqvae_was_trained() -> None:
    """make demo's 2-epoch VQ-VAE reported PRDN 23% with nothing to tell it from the shipped one's 9.5%: the report
    names the run's command and epochs (and says nothing when the checkpoint keeps no command)."""
    from vqvae_eval import trained_line

    meta = {"command": "vqvae_train.py --epochs 2 --max-steps 60",
            "config": {"train": {"epochs": 2, "max_steps_per_epoch": 60}}}
    assert trained_line(meta) == ["trained by `vqvae_train.py --epochs 2 --max-steps 60`: 2 epochs, at most 60 steps "
                                  "each", ""]
    assert trained_line({}) == []


@pytest.mark.parametrize("bad", [-1, 32])
def test_decode_refuses_codes_outside_the_codebook(bad: int) -> None:
    """-1 used to decode silently as the last code, 32 to fail as a bare IndexError."""
    m = tiny_model().eval()
    codes = torch.zeros(1, 16, dtype=torch.long)
    codes[0, 3] = bad
    with pytest.raises(ValueError, match=r"codes must be in 0\.\.31 \(codebook_size 32\)"):
        m.decode(codes)


def test_a_unit_is_one_divisor_per_window_and_lead() -> None:
    """The gain vqvae_eval.py --record saves is [W, 2]: passed as the unit, it broadcast along time, each sample t
    of a window scaled by window t's gain (silently when W is the window's length), or failed in torch's words.
    It is refused naming the shape wanted; [B, 1, 2] and one that broadcasts to it ([1, 1, 2], [2]) code alike."""
    torch.manual_seed(0)
    m = tiny_model(num_quantizers=2, window_gain=True).eval()
    x = torch.randn(16, 16, 2) * torch.exp(torch.randn(16, 1, 2))
    with torch.no_grad():
        unit = m.unit(x)
        codes, z = m.encode(x, unit), m.encode_latent(x, unit)
        gain = unit[:, 0]                                       # [W, 2], as saved; W = 16 = the window's samples
        for step, args in (("decode", (codes, gain)), ("decode_latent", (z, gain)), ("encode", (x, gain)),
                           ("encode_latent", (x, gain)), ("decode", (codes[:3], gain[:3]))):
            with pytest.raises(ValueError, match=r"unit has shape \((16|3), 2\), not \[(16|3), 1, 2\].*gain\[:, None\]"):
                getattr(m, step)(*args)
        assert torch.equal(m.decode(codes, gain[:, None]), m.decode(codes, unit))
        one = unit[:1]
        assert torch.equal(m.decode(codes, one), m.decode(codes, one.expand(16, 1, 2)))
        assert torch.equal(m.encode(x, one[0, 0]), m.encode(x, one.expand(16, 1, 2)))


@pytest.mark.parametrize("step", ["encode", "encode_latent"])
@pytest.mark.parametrize("gain", [0.0, -0.5, math.nan, math.inf])
def test_a_unit_of_no_positive_gain_is_refused_before_coding(step: str, gain: float) -> None:
    """The windows are divided by a given unit: a unit of 0 (an RMS of one's own of a flat lead) made the latents
    inf or NaN, whose NaN distances coded every step 0 without a word; a negative one coded the window upside down."""
    m = tiny_model(num_quantizers=2).eval()
    x = torch.randn(2, 64, 2)
    unit = torch.ones(2, 1, 2)
    unit[1, 0, 1] = gain
    with pytest.raises(ValueError, match=r"unit holds 1 gain\(s\) that are not finite and > 0, e.g. (0|-0.5|nan|inf)"):
        getattr(m, step)(x, unit)
    assert getattr(m, step)(x, torch.ones(2)).shape[0] == 2        # positive gains, broadcast, as before


def test_a_unit_saved_as_numpy_or_given_as_a_list_codes_as_the_tensor() -> None:
    """The .npz's gain[:, None] loads as numpy: decode took it, encode stopped in torch.isfinite, and a list in
    '.shape'. Each codes and decodes as the same unit as a tensor; so does one in float64 (numpy's own, a gain
    computed with np.sqrt), which met the float32 encoder in 'Input type (double) and bias type (float)'."""
    torch.manual_seed(0)
    m = tiny_model(num_quantizers=2, window_gain=True).eval()
    x = torch.randn(3, 64, 2)
    with torch.no_grad():
        unit = m.unit(x)
        codes, z = m.encode(x, unit), m.encode_latent(x, unit)
        for given in (unit.numpy(), unit.tolist(), unit.numpy().astype(np.float64), unit.double()):
            assert torch.equal(m.encode(x, given), codes)
            assert torch.equal(m.encode_latent(x, given), z)
            assert torch.equal(m.decode(codes, given), m.decode(codes, unit))
            assert torch.equal(m.decode_latent(z, given), m.decode_latent(z, unit))


def test_decode_refuses_float_codes() -> None:
    with pytest.raises(ValueError, match="integers"):
        tiny_model().eval().decode(torch.zeros(1, 16))


def test_decode_names_codes_saved_as_numpy_or_without_their_batch() -> None:
    """Codes saved with np.save and loaded back met 'Int64DType' object has no attribute 'is_floating_point', and a
    step's three codes without the batch axis, [T, 3], were said to have '1 codebook levels'."""
    m = tiny_model(num_quantizers=3).eval()
    codes = m.encode(torch.randn(1, 64, 2))
    with pytest.raises(TypeError, match="torch.as_tensor"):
        m.decode(codes.numpy())
    with pytest.raises(ValueError, match=r"codes \[16, 3\] have 1 codebook levels.*\[B, T\] .* or \[B, T, Q\]; "
                                         r"one window's codes \[T, 3\] take codes\[None\]"):
        m.decode(codes[0])


def test_one_codebooks_codes_of_one_step_decode() -> None:
    """Codes [B, 1] of a one-codebook model (windows of one step) are [B, T'], not one window's [T, Q] of a model of
    several levels, which decode names."""
    m = tiny_model().eval()
    x = torch.randn(2, 4, 2)
    codes = m.encode(x)
    assert codes.shape == (2, 1) and m.decode(codes).shape == (2, 4, 2)


def test_decode_names_codes_of_one_window_or_one_axis_too_many() -> None:
    """One codebook's codes of one window, [T'], passed as_levels as [T', 1] and stopped in a permute of torch's
    words, as did codes with an axis too many."""
    m = tiny_model().eval()
    codes = m.encode(torch.randn(1, 64, 2))
    with pytest.raises(ValueError, match=r"must be \[B, T'\] .* got \[16\]: one window's codes take codes\[None\]"):
        m.decode(codes[0])
    with pytest.raises(ValueError, match=r"must be \[B, T'\] \(one codebook\) or \[B, T', Q\], got \[1, 1, 16, 1\]"):
        m.decode(codes[None, ..., None])


def test_codes_of_any_integer_type_decode_alike() -> None:
    """Codes saved small (uint8 for a codebook of up to 256) indexed the codebook as a boolean mask: an IndexError
    about a mask's shape. Every integer type decodes as torch.long does."""
    torch.manual_seed(0)
    m = tiny_model(num_quantizers=2).eval()
    with torch.no_grad():
        codes = m.encode(torch.randn(2, 64, 2))
        want = m.decode(codes)
        for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
            assert torch.equal(m.decode(codes.to(dtype)), want), dtype


def test_decode_latent_names_latents_saved_as_numpy() -> None:
    """A .npz's latents passed as they load (numpy) met conv1d's list of every signature it takes; encode and decode
    name a numpy input, and so does decode_latent now."""
    m = tiny_model().eval()
    x = torch.randn(1, 64, 2)
    z = m.encode_latent(x, m.unit(x))
    with pytest.raises(TypeError, match=r"expected latents as a torch tensor, got ndarray: pass torch.as_tensor"):
        m.decode_latent(z.detach().numpy(), m.unit(x))


@pytest.mark.parametrize("step", ["decode_latent", "nearest_codes"])
def test_latents_time_first_or_as_numpy_are_named_by_both_of_their_readers(step: str) -> None:
    """nearest_codes takes encode_latent's latents as decode_latent does: a .npz's [W, T', D] latents, or a numpy
    array, stopped there in a matmul's shapes or a 'numpy' attribute error."""
    m = tiny_model().eval()
    x = torch.randn(1, 64, 2)
    with torch.no_grad():
        z = m.encode_latent(x, m.unit(x))
    with pytest.raises(ValueError, match=r"latents must be \[B, 8, T'\] \(latent_dim second\), got \(1, 16, 8\)"):
        getattr(m, step)(z.transpose(1, 2))
    with pytest.raises(TypeError, match=r"expected latents as a torch tensor, got ndarray"):
        getattr(m, step)(z.numpy())


def test_latents_blended_in_float64_decode_as_their_float32_values() -> None:
    """The README invites editing or blending latents before decode_latent; blended in numpy (float64) they stopped
    in conv1d's 'Input type (double) and bias type (float)', while nearest_codes coded the same latents."""
    m = tiny_model(window_gain=True).eval()
    x = torch.randn(2, 64, 2)
    with torch.no_grad():
        unit = m.unit(x)
        z = m.encode_latent(x, unit)
        blend = torch.from_numpy(np.linspace(0, 1, z.shape[2]) * z.numpy())          # float64
        assert torch.equal(m.decode_latent(blend, unit), m.decode_latent(blend.float(), unit))
        assert torch.equal(m.nearest_codes(blend), m.nearest_codes(blend.float()))


def test_restart_before_the_codebook_is_initialised_restarts_and_counts_nothing() -> None:
    """Before k-means init there is no reservoir to restart from: the codebook is kept, and no restart is reported."""
    torch.manual_seed(0)
    q = VectorQuantizer(8, 4, decay=0.9, commitment=0.25)
    before = q.codebook.clone()
    assert q.restart_dead(1.0) == 0
    assert torch.equal(q.codebook, before)
    assert q.end_epoch()["restarted"] == 0


def test_nearest_takes_the_first_of_equally_near_codes_and_argmins_codes() -> None:
    """nearest reads its distances with min: the codes of argmin over |x|^2 - 2 x.c + |c|^2 summed in that order
    (the codes shipped models were trained and evaluated on), and of two equal codes the first."""
    torch.manual_seed(0)
    q = VectorQuantizer(64, 8, decay=0.9, commitment=0.25, restart_every=0)
    q.codebook[40] = q.codebook[7]
    flat = torch.cat([torch.randn(3000, 8) * 0.1, q.codebook[7] + 1e-4 * torch.randn(50, 8)])
    d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ q.codebook.t() + q.codebook.pow(2).sum(1)[None]
    codes = q.nearest(flat)
    assert torch.equal(codes, d.argmin(1))
    assert (codes[3000:] == 7).all()


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A VQ-VAE checkpoint as vqvae_train.py writes one, of the tiny config (64 Hz, 1 s windows), with two codebooks
    and each window's gain, so every array vqvae_eval.py --record saves has its full shape."""
    from hyper_params import config_from_dict
    from tiny import TINY

    cfg = config_from_dict({**TINY, "model": {**TINY["model"], "num_quantizers": 2, "window_gain": True}})
    torch.manual_seed(0)
    path = tmp_path / "vqvae-1" / "best.pt"
    path.parent.mkdir()
    torch.save({"kind": "vqvae", "model": VQVAE(cfg.model).state_dict(), "config": cfg.to_dict(), "meta": {}}, path)
    return path


def code_record(checkpoint, record, tmp_path, *flags: str):
    from conftest import run_script

    return run_script(vqvae_eval.main, "vqvae_eval.py", ["--checkpoint", str(checkpoint), "--record", str(record),
                                                         "--results", str(tmp_path / "results"), *flags])


def test_vqvae_eval_names_the_weights_it_loaded_though_the_file_is_replaced_after(tiny_checkpoint, tmp_path,
                                                                                  monkeypatch) -> None:
    """vqvae_eval.py hashed the checkpoint again after loading it: a best.pt its run saved in between was named in
    place of the weights that coded the record. checkpoint_sha256 is the digest of the bytes loaded."""
    from conftest import replaced_once_loaded, write_record
    from paths import file_sha256

    read = file_sha256(tiny_checkpoint)
    replaced_once_loaded(monkeypatch, tiny_checkpoint)
    res = code_record(tiny_checkpoint, write_record(tmp_path / "db", "r", seconds=5), tmp_path)
    assert res.returncode == 0, res.stderr
    saved = np.load(next((tmp_path / "results").glob("vqvae_eval-*/r_0s.npz")))
    assert str(saved["checkpoint_sha256"]) == read != file_sha256(tiny_checkpoint)


def test_vqvae_eval_stopped_while_writing_leaves_no_folder(tiny_checkpoint, tmp_path, monkeypatch) -> None:
    """Stopped (Ctrl-C, or kill -9 with nothing run after it) once the .npz was written and before its plot, a
    vqvae_eval-<time> folder stayed with the codes and no plot, or the split's reconstruction.json without its .md: to
    be taken for a finished run. The files are written into a hidden folder, renamed once all are there."""
    from conftest import write_record

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(vqvae_eval, "plot_windows", stopped)
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)     # a kill cleans nothing up
    res = code_record(tiny_checkpoint, write_record(tmp_path / "db", "r", seconds=5), tmp_path)
    assert res.returncode == 130 and not list((tmp_path / "results").glob("vqvae_eval-*"))
    monkeypatch.undo()
    res = code_record(tiny_checkpoint, write_record(tmp_path / "db", "r", seconds=5), tmp_path)
    assert res.returncode == 0, res.stderr
    (run,) = (tmp_path / "results").glob("vqvae_eval-*")
    assert sorted(p.name for p in run.iterdir()) == ["r_0s.npz", "r_0s.png"]


def test_vqvae_eval_of_a_split_stopped_at_its_plot_leaves_no_folder(tmp_path, monkeypatch) -> None:
    """--split stopped (Ctrl-C, or kill -9 with nothing run after it) at its examples' plot left a vqvae_eval-<time>
    folder with reconstruction.json and .md and no plot, to be taken for a finished run; the run's folder appears
    once all three are written."""
    def plotted(model, data, split, prepared, out, checkpoint):
        out.write_text("png")

    def stopped(*args):
        raise KeyboardInterrupt
    for name, value in (("load_split", lambda *a, **k: {"records": ["100"]}), ("seen_warnings", lambda *a: []),
                        ("reconstruction_report", lambda *a: {"per_record": {}}), ("source_samples", lambda *a: None),
                        ("stored_leads", lambda *a: {}), ("report_lines", lambda *a: ["a", "b", "c"])):
        monkeypatch.setattr(vqvae_eval, name, value)
    monkeypatch.setattr(vqvae_eval.paths, "run_data_hash", lambda *a: "h")
    args = SimpleNamespace(split="validation", prepared=str(tmp_path), results=str(tmp_path / "results"))
    split = (args, None, {"meta": {}}, None, tmp_path / "best.pt", "digest", {"git_commit": "commit"})
    monkeypatch.setattr(vqvae_eval, "plot_examples", stopped)
    with monkeypatch.context() as kill:
        kill.setattr(shutil, "rmtree", lambda *a, **k: None)     # a kill cleans nothing up
        with pytest.raises(KeyboardInterrupt):
            vqvae_eval.evaluate_split(*split)
    assert not list((tmp_path / "results").glob("vqvae_eval-*"))
    monkeypatch.setattr(vqvae_eval, "plot_examples", plotted)
    vqvae_eval.evaluate_split(*split)
    (run,) = (tmp_path / "results").glob("vqvae_eval-*")
    assert sorted(p.name for p in run.iterdir()) == ["reconstruction.json", "reconstruction.md",
                                                      "reconstruction_examples.png"]


def test_vqvae_eval_record_saves_the_readme_recipes_codes_and_latents(tiny_checkpoint, tmp_path) -> None:
    """vqvae_eval.py --record on a 250 Hz record: windows of the model's 1 s at its 64 Hz, each coded as the README's
    recipe codes one; the saved codes and gains decode to the saved reconstruction."""
    from conftest import write_record
    from hyper_params import stored_config
    from prepare_mitbih import read_record

    record = write_record(tmp_path / "db", "r", seconds=20, fs=250)
    res = code_record(tiny_checkpoint, record, tmp_path, "--start", "2.5", "--seconds", "3")
    assert res.returncode == 0, res.stderr
    assert "(leads MLII, V1), its 250 Hz resampled to 64 Hz: 3 windows of 1 s from 2.5 s, reconstructed at PRD" \
        in res.stdout
    run = next((tmp_path / "results").glob("vqvae_eval-*"))
    assert sorted(p.name for p in run.iterdir()) == ["r_2.5s.npz", "r_2.5s.png"]
    saved = np.load(run / "r_2.5s.npz")             # strings too, without pickles
    assert str(saved["command"]) == shlex.join(["python3", "vqvae_eval.py", *res.args[1:]])     # what made it
    assert saved["codes"].shape == (3, 16, 2) and saved["codes"].dtype == np.int64
    assert saved["latents"].shape == (3, 16, 8) and saved["latents"].dtype == np.float32
    assert saved["gain"].shape == (3, 2) and saved["reconstruction"].shape == saved["signal"].shape == (3, 64, 2)
    np.testing.assert_array_equal(saved["start_s"], [2.5, 3.5, 4.5])
    assert (saved["fs"], str(saved["record"]), str(saved["checkpoint"])) == (64, str(record), str(tiny_checkpoint))
    vq, ckpt = vqvae_eval.load_vqvae(tiny_checkpoint)
    rec = read_record(str(record), stored_config(ckpt["config"], str(tiny_checkpoint)).data)
    for i, start in enumerate(saved["start_s"]):
        x = torch.from_numpy(rec.signal[round(start * 64):round(start * 64) + 64][None])
        with torch.no_grad():
            unit = vq.unit(x)
            z, codes = vq.encode_latent(x, unit), vq.encode(x, unit)
        np.testing.assert_array_equal(saved["signal"][i], x[0].numpy())
        np.testing.assert_array_equal(saved["codes"][i], codes[0].numpy())
        np.testing.assert_array_equal(saved["latents"][i], z[0].T.numpy())
        np.testing.assert_array_equal(saved["gain"][i], unit[0, 0].numpy())
    with torch.no_grad():
        back = vq.decode(torch.as_tensor(saved["codes"]), torch.as_tensor(saved["gain"])[:, None])
    np.testing.assert_allclose(saved["reconstruction"], back.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(saved["reconstruction"], saved["signal"], atol=0.01)
    res = code_record(tiny_checkpoint, record, tmp_path, "--start", "15.5", "--seconds", "end")
    assert res.returncode == 0 and "4 windows of 1 s from 15.5 s" in res.stdout, res.stderr


def test_vqvae_eval_record_reads_only_the_windows_asked_for(tiny_checkpoint, tmp_path, monkeypatch) -> None:
    """--record with --start and --seconds asks wfdb for those seconds and a margin, not the whole record (an hour of
    a 24 h Holter record read all of it: 2.2 GB), and codes the samples the whole record gives there."""
    import wfdb

    from conftest import write_record
    from hyper_params import stored_config
    from prepare_mitbih import read_record

    record = write_record(tmp_path / "db", "r", seconds=200, fs=250, annotate=False)
    asked, read = [], wfdb.rdrecord
    monkeypatch.setattr(wfdb, "rdrecord", lambda *a, **k: asked.append(k) or read(*a, **k))
    res = code_record(tiny_checkpoint, record, tmp_path, "--start", "150", "--seconds", "3")
    assert res.returncode == 0, res.stderr
    assert len(asked) == 1 and (150 - 31) * 250 <= asked[0]["sampfrom"] and asked[0]["sampto"] <= (153 + 31) * 250
    monkeypatch.setattr(wfdb, "rdrecord", read)
    _, ckpt = vqvae_eval.load_vqvae(tiny_checkpoint)
    whole = read_record(str(record), stored_config(ckpt["config"], str(tiny_checkpoint)).data).signal
    saved = np.load(next((tmp_path / "results").glob("vqvae_eval-*")) / "r_150s.npz")
    np.testing.assert_allclose(saved["signal"], whole[150 * 64:153 * 64].reshape(3, 64, 2), atol=1e-5)


def test_vqvae_eval_record_leads_codes_the_channels_named(tiny_checkpoint, tmp_path, monkeypatch) -> None:
    """A 12-lead record was coded from II and V1, whatever leads one wanted: --leads names them, as forecast.py's
    does ('lead ii' is II). The windows are the named channels' (as a record of those two alone reads), and the .npz
    and plot name them; a name that is no channel lists the record's; one lead twice, or --leads without --record,
    is refused before any record or model is read."""
    import wfdb

    from conftest import TWELVE, run_script, twelve_leads, write_signal

    path = twelve_leads(tmp_path / "db", "r", ())
    x = wfdb.rdrecord(str(path)).p_signal
    two = write_signal(tmp_path / "two", "r", x[:, [TWELVE.index("II"), TWELVE.index("V5")]], leads=("II", "V5"))
    saved, titles, plot = {}, [], vqvae_eval.plot_windows
    monkeypatch.setattr(vqvae_eval, "plot_windows", lambda *a: titles.append(a[-1]) or plot(*a))
    for name, record, flags in (("leads", path, ["--leads", "lead ii", "V5"]), ("alone", two, []),
                                ("default", path, [])):
        res = code_record(tiny_checkpoint, record, tmp_path / name, "--start", "10", "--seconds", "2", *flags)
        assert res.returncode == 0, res.stderr
        saved[name] = np.load(next((tmp_path / name / "results").glob("vqvae_eval-*/r_10s.npz")))
    assert list(saved["leads"]["leads"]) == list(saved["alone"]["leads"]) == ["II", "V5"]
    assert titles[0][0] == ("record r at 10 s, lead 1: II", "record r at 10 s, lead 2: V5")
    np.testing.assert_array_equal(saved["leads"]["signal"], saved["alone"]["signal"])
    np.testing.assert_array_equal(saved["leads"]["codes"], saved["alone"]["codes"])
    assert list(saved["default"]["leads"]) == ["II", "V1"]
    assert not np.array_equal(saved["default"]["signal"], saved["leads"]["signal"])
    res = code_record(tiny_checkpoint, path, tmp_path, "--leads", "II", "V7")
    assert res.returncode == 2 and f"{path}: no channel is V7 (--leads' lead 2); its channels are " \
                                   f"{', '.join(TWELVE)}" in res.stderr, res.stderr
    res = code_record(tmp_path / "none.pt", tmp_path / "none", tmp_path, "--leads", "II", "ii")
    assert res.returncode == 2 and "--leads II ii names lead II twice" in res.stderr, res.stderr
    res = code_record(tiny_checkpoint, path, tmp_path, "--leads", "II", "V5", "--split", "test")
    assert res.returncode == 2 and "not allowed with argument --record" in res.stderr, res.stderr
    res = run_script(vqvae_eval.main, "vqvae_eval.py", ["--split", "test", "--leads", "II", "V5"])
    assert res.returncode == 2 and "--leads II V5 chooses the channels read from --record" in res.stderr, res.stderr


def test_code_windows_fills_its_outputs_in_place(tiny_checkpoint, monkeypatch) -> None:
    """Each window's codes, latents, gain and reconstruction go straight into arrays of all windows: stacked from
    lists, they were held twice (a 24 h record's 28800 windows peaked at 2.13 GB, 872 MB for 6 h; 711 MB now)."""
    vq, _ = vqvae_eval.load_vqvae(tiny_checkpoint)
    windows = np.random.default_rng(0).normal(0, 0.3, (4, 64, 2)).astype(np.float32)
    alone = [vqvae_eval.code_windows(vq, windows[i:i + 1]) for i in range(4)]
    empty, made = np.empty, []
    monkeypatch.setattr(np, "empty", lambda *a, **k: made.append(empty(*a, **k)) or made[-1])
    coded = vqvae_eval.code_windows(vq, windows)
    assert sorted(coded) == ["codes", "gain", "latents", "reconstruction"]
    assert all(any(v is m for m in made) for v in coded.values())     # each allocated whole before the first window
    for key, v in coded.items():
        assert v.shape[0] == 4 and v.dtype == alone[0][key].dtype
        np.testing.assert_array_equal(v, np.concatenate([a[key] for a in alone]))


@pytest.mark.parametrize("flags, message", [
    (["--start", "19.5"], r"--start 19.5 s leaves less than one window \(1 s\) of .*r, which lasts 20.0 s; the last "
                          r"window starts at 19 s"),
    (["--start", "40"], r"--start 40 s leaves less than one window"),
    (["--start", "-1"], r"--start -1 s is not a time in the record"),
    (["--start", "10", "--seconds", "30"], r"--seconds 30 from --start 10 s runs past the end of .*r \(20.0 s\): 10 "
                                           r"windows of 1 s fit, --seconds end takes them"),
    (["--seconds", "0.5"], r"--seconds 0.5 is shorter than one window of 1 s"),
    (["--split", "test"], r"argument --split: not allowed with argument --record"),
])
def test_vqvae_eval_record_refuses_windows_it_cannot_cut(tiny_checkpoint, tmp_path, flags, message) -> None:
    from conftest import write_record

    record = write_record(tmp_path / "db", "r", seconds=20, fs=250, annotate=False)
    res = code_record(tiny_checkpoint, record, tmp_path, *flags)
    assert res.returncode == 2 and re.search(message, res.stderr), res.stderr
    assert not (tmp_path / "results").exists()


def test_vqvae_eval_record_names_a_record_missing_or_shorter_than_a_window(tiny_checkpoint, tmp_path) -> None:
    from conftest import write_record

    res = code_record(tiny_checkpoint, tmp_path / "nowhere" / "r", tmp_path)
    assert res.returncode == 2 and f"--record {tmp_path / 'nowhere' / 'r'}: no header" in res.stderr
    short = write_record(tmp_path / "db", "short", seconds=0.8, fs=250, annotate=False)
    res = code_record(tiny_checkpoint, short, tmp_path)
    # 0.8 s at 250 Hz is 104 samples at 128 Hz, 0.8125 s
    assert res.returncode == 2 and f"{short} lasts 0.81 s, shorter than the model's window of 1 s" in res.stderr


def test_record_windows_name_a_window_over_a_gap_and_the_seconds_left_out(capsys) -> None:
    signal = np.zeros((640, 2), np.float32)
    windows, starts = vqvae_eval.record_windows(signal, 1.0, 2.5, 64, 64, "r")
    assert windows.shape == (2, 64, 2) and starts.tolist() == [1.0, 2.0]
    assert "--seconds 2.5 is no whole number of 1 s windows: coding 2, 2 s" in capsys.readouterr().err
    signal[200] = np.nan
    with pytest.raises(UserError, match=r"r: the window 3-4 s touches a gap of NaN/invalid or flat samples; no "
                       r"--start between 0 and 10 s \(the part read\) gives 10 s without gaps"):
        vqvae_eval.record_windows(signal, 0.0, math.inf, 64, 64, "r")


def test_a_window_over_a_gap_names_the_nearest_clean_starts_for_the_seconds_asked() -> None:
    """'choose another --start or --seconds' left the user to guess; now the nearest starts before and after the gap
    from which as many seconds are clean are said, in the record's seconds, as forecast.py says a context's."""
    signal = np.zeros((640, 2), np.float32)     # the record's samples from 6400 (100 s) on
    signal[200] = np.nan
    with pytest.raises(UserError, match=r"r: the window 103-104 s touches a gap of NaN/invalid or flat samples; the "
                       r"nearest clean --start for 2 s: 101.125 s or 103.141 s$"):
        vqvae_eval.record_windows(signal, 102.0, 2.0, 64, 64, "r", offset=6400, length=20000)
    with pytest.raises(UserError, match=r"the nearest clean --start for 1 s: 102.125 s or 103.141 s$"):
        vqvae_eval.record_windows(signal, 103.0, None, 64, 64, "r", offset=6400, length=20000)


def test_vqvae_eval_refuses_a_results_folder_it_cannot_write_before_the_coding(tiny_checkpoint, tmp_path,
                                                                               monkeypatch) -> None:
    """--results that takes no folder (a name too long, a read-only one) was found only when the report was written,
    after the whole split or record was coded; now before any of it, with the error naming the folder."""
    from conftest import run_script

    monkeypatch.setattr(vqvae_eval, "load_split", lambda *a, **k: pytest.fail("the split was read"))
    monkeypatch.setattr(vqvae_eval, "code_record", lambda *a, **k: pytest.fail("the record was coded"))
    out = tmp_path / ("x" * 300)
    for what in (["--split", "validation"], ["--record", str(tmp_path / "100")]):
        r = run_script(vqvae_eval.main, "vqvae_eval.py", ["--checkpoint", str(tiny_checkpoint), "--results", str(out),
                                                          *what])
        assert r.returncode == 2 and r.stderr == f"error: cannot write to the output folder {out}: File name too long\n"
    assert [p.name for p in tmp_path.iterdir()] == ["vqvae-1"]


def test_a_record_just_short_of_a_window_is_not_said_to_last_one() -> None:
    """0.96 s at 128 Hz read 'lasts 1.0 s, shorter than the model's window of 1 s': the length is said to 0.01 s,
    rounded down, as forecast.py says a record's end."""
    with pytest.raises(UserError, match=r"^r lasts 0\.96 s, shorter than the model's window of 1 s$"):
        vqvae_eval.record_windows(np.zeros((123, 2), np.float32), 0.0, None, 128, 128, "r")


def test_a_start_too_late_for_a_window_says_the_records_length_rounded_down() -> None:
    """2559 samples at 128 Hz (19.992 s) last 19.99 s, not 20.0 s, in the message of a start that leaves less
    than one window, as in the message of a record shorter than one."""
    with pytest.raises(UserError, match=r"leaves less than one window \(1 s\) of r, which lasts 19\.99 s; the last "
                                        r"window starts at 18\.99"):
        vqvae_eval.record_windows(np.zeros((2559, 2), np.float32), 19.5, None, 128, 128, "r")


def test_run_json_names_a_checkpoint_given_relative_by_its_absolute_path(tmp_path, monkeypatch) -> None:
    """--vqvae ck/best.pt was recorded as given, relative: run.json, read from another folder, named no file."""
    monkeypatch.chdir(tmp_path)
    record = vqvae_eval.source_record(None, vqvae_eval.VQVAE_KEYS, "ck/best.pt", "ck/best.pt", "ab12")
    assert record == {"vqvae_checkpoint": str(tmp_path / "ck" / "best.pt"), "vqvae_given": "ck/best.pt",
                      "vqvae_sha256": "ab12"}


def test_a_resumes_record_keeps_its_first_runs_given_and_digest_and_names_the_path_as_resolved(tmp_path,
                                                                                             monkeypatch) -> None:
    """A resume names the checkpoint as run_vqvae resolves it, absolute (its first run's record, relative when it was
    made before paths were made absolute; a run made before vqvae_checkpoint was recorded: its own checkpoint), and
    keeps the first run's given name and digest."""
    monkeypatch.chdir(tmp_path)
    resume = {"meta": {"vqvae_given": "pretrained", "vqvae_sha256": "ab12"}}
    assert vqvae_eval.source_record(resume, vqvae_eval.VQVAE_KEYS, "ck/last.pt", None, "") == {
        "vqvae_checkpoint": str(tmp_path / "ck" / "last.pt"), "vqvae_given": "pretrained", "vqvae_sha256": "ab12"}
    resume["meta"]["vqvae_checkpoint"] = "vq/best.pt"
    assert vqvae_eval.source_record(resume, vqvae_eval.VQVAE_KEYS, "vq/best.pt", None, "")["vqvae_checkpoint"] == str(
        tmp_path / "vq" / "best.pt")


def test_the_next_commands_name_the_first_plotted_windows_record_and_the_runs_prepared_data(tmp_path) -> None:
    """The forecast command reads the record of the epoch plots' first window, not another validation window's;
    evaluate.py reads the run's --prepared folder, none when the run read the default one. A resume whose earlier
    folder has no best.pt either names this run's, which it will write."""
    import shlex

    cfg = load_config()
    val = {"records": ["x", "y"], "record": [1, 0], "start": [0, 0], "fs": cfg.data.samples_per_second}
    for prepared in (str(tmp_path), None):
        fc, ev = (shlex.split(line.split(": ", 1)[1]) for line in vqvae_eval.next_commands(
            tmp_path / "new", cfg, val, prepared, {"ckpt_dir": str(tmp_path / "old")}).splitlines()[:2])
        assert fc[fc.index("--record") + 1].endswith("y") and fc[3] == ev[3] == str(tmp_path / "new" / "best.pt")
        assert ("--prepared" in ev) == (prepared is not None)


def test_the_next_commands_name_the_folders_the_environment_chose(tmp_path, monkeypatch) -> None:
    """A run whose data $ECG_PREPARED_DIR chose and whose results $ECG_RESULTS_DIR did printed commands that, typed
    where those are not set (a one-off `ECG_PREPARED_DIR=... python3 ...`), read data/prepared and wrote results/;
    they name them, as evaluate's report does. A --prepared given is the flag's, with no variable for it."""
    import shlex

    import vqvae_train

    cfg = load_config()
    val = {"records": ["x"], "record": [0], "start": [0], "fs": cfg.data.samples_per_second}
    monkeypatch.setenv("ECG_PREPARED_DIR", str(tmp_path / "my data"))
    monkeypatch.setenv("ECG_RESULTS_DIR", "runs")
    monkeypatch.setenv("ECG_CHECKPOINTS_DIR", "ckpts")
    env = [f"ECG_PREPARED_DIR={tmp_path / 'my data'}", "ECG_RESULTS_DIR=runs"]
    told = [shlex.split(line.split(": ", 1)[1]) for line in vqvae_eval.next_commands(tmp_path / "run", cfg, val, None)
            .splitlines() + vqvae_train.next_commands(tmp_path / "run", cfg, None).splitlines()]
    assert [t[:t.index("python3")] for t in told] == [env[1:], env, env, [*env, "ECG_CHECKPOINTS_DIR=ckpts"]]
    told = [shlex.split(line.split(": ", 1)[1]) for line in vqvae_eval.next_commands(
        tmp_path / "run", cfg, val, "mine").splitlines() + vqvae_train.next_commands(tmp_path / "run", cfg, "mine")
        .splitlines()]
    assert [t[:t.index("python3")] for t in told] == [env[1:], env[1:], env[1:], [env[1], "ECG_CHECKPOINTS_DIR=ckpts"]]
    assert all(t[t.index("--prepared") + 1] == "mine" for t in told[1:])


def test_run_folders_passed_over_are_the_kinds_folders_newer_than_the_newest_checkpoint(tmp_path, capsys):
    """Only folders newer than the newest best.pt are passed over, not those between two checkpoints' runs; a file
    or another kind's run folder without best.pt is none."""
    import os

    for i, name in enumerate(("vqvae-1", "vqvae-2", "vqvae-3", "transformer-4", "vqvae-5.txt")):
        if name.endswith(".txt"):
            (tmp_path / name).write_text("")
        else:
            (tmp_path / name).mkdir()
        if name in ("vqvae-1", "vqvae-3"):
            (tmp_path / name / "best.pt").write_bytes(b"")
            os.utime(tmp_path / name / "best.pt", (1e9 + i, 1e9 + i))
        os.utime(tmp_path / name, (1e9 + i, 1e9 + i))
    assert vqvae_eval.latest_checkpoint("vqvae", str(tmp_path)) == tmp_path / "vqvae-3" / "best.pt"
    assert capsys.readouterr().err == ""


def test_kmeans_init_starts_every_code_on_an_encoder_output_of_its_own() -> None:
    """With a batch of more encoder outputs than codes, k-means starts each code on another output (drawn without
    replacement), so each ends nearest to some output of that batch: drawn with replacement, 6 of 128 codes here (70
    of 1024 on the default config's batch) started on an output another code had too and ended with none, dead."""
    torch.manual_seed(0)
    q = VectorQuantizer(128, 8, decay=0.99, commitment=0.25, restart_every=0).train()
    z = torch.randn(1, 8, 384)
    q(z)
    assert bool((torch.bincount(q.nearest(z[0].T), minlength=128) > 0).all())


def test_kmeans_init_fills_the_restart_reservoir_with_distinct_outputs() -> None:
    """The reservoir dead codes restart on is drawn from the first batch without replacement too: drawn with it, two
    of its rows could be one output, and two dead codes restarted on them."""
    torch.manual_seed(0)
    q = VectorQuantizer(4, 2, decay=0.9, commitment=0.25, restart_every=0, reservoir=16)
    q.init_from(torch.randn(20, 2))
    assert len(torch.unique(q.recent, dim=0)) == 16


def test_dead_codes_restart_on_distinct_recent_outputs() -> None:
    """Dead codes restart each on another reservoir row while it holds as many: drawn with replacement, two dead
    codes could land on one output, and the one nearest() does not pick stays dead for another restart_every steps."""
    torch.manual_seed(0)
    q = VectorQuantizer(16, 2, decay=0.9, commitment=0.25, restart_every=0, reservoir=16).train()
    q(torch.randn(1, 2, 40))
    with torch.no_grad():
        q.recent.copy_(torch.stack([torch.arange(16.0), -torch.arange(16.0)], 1) * 10)
        q.window_usage.zero_()
    assert q.restart_dead(1.0) == 16
    rows = torch.cdist(q.codebook, q.recent).argmin(1)
    assert sorted(rows.tolist()) == list(range(16))


def test_a_batch_of_fewer_outputs_than_codes_starts_a_code_on_each_output() -> None:
    """24 encoder outputs for 32 codes: k-means starts a code on every output (the 8 codes left over on outputs
    already taken), so each output codes as itself; drawn with replacement, about 6 outputs had no code of their own
    and shared a neighbour's until the first restart check."""
    torch.manual_seed(0)
    q = VectorQuantizer(32, 4, decay=0.99, commitment=0.25, restart_every=0).train()
    z = torch.randn(1, 4, 24)
    q.init_from(z[0].T)
    assert len(q.nearest(z[0].T).unique()) == 24
