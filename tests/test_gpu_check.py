"""`segdistill doctor --train` (make gpu-check): its CPU part runs here; what this machine cannot run is skipped."""

import segdistill.cli
from segdistill import gpu_check


def test_gpu_check_runs_fp32_here_and_reports_the_rest_skipped(tmp_path, capsys):
    rows = gpu_check.gpu_check(work=tmp_path)
    by = {r.case: r for r in rows}
    assert list(by) == ["fp32", "fp16 O1", "fp16 O2", "bf16 O1", "bf16 O2", "distill, 2 GPUs"]
    assert by["fp32"].status == "ok", by["fp32"].detail
    # On a CPU the resumed run ends with exactly the uninterrupted run's weights.
    assert "resumed at 1" in by["fp32"].detail and "bitwise equal" in by["fp32"].detail
    assert (tmp_path / "fp32_O1" / "iter_1").is_dir() and (tmp_path / "fp32_O1_resumed" / "iter_2").is_dir()
    for case in list(by)[1:]:
        assert by[case].status == "skipped", case
    assert "runs fp32 only" in by["bf16 O2"].detail and "2 needed" in by["distill, 2 GPUs"].detail
    assert "1 of 1 cases that ran worked; 5 skipped (not run here, so not checked)" in gpu_check.table(rows)


def test_a_failing_case_is_a_row_and_the_command_fails(tmp_path, monkeypatch, capsys):
    def broken(*args, **kw):
        raise ValueError("dtype mismatch\nsecond line")

    monkeypatch.setattr(gpu_check, "train_eval_resume", broken)
    assert segdistill.cli.main(["doctor", "--train", "--work", str(tmp_path)]) == 2
    out = capsys.readouterr()
    assert "fp32             FAILED" in out.out and "ValueError: dtype mismatch" in out.out
    assert "0 of 1 cases that ran worked" in out.out and "some training cases failed" in out.err
