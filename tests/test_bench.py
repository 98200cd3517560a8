"""bench.py in a tiny configuration: it runs, both loops give the same metrics, the report has its fields."""
import bench
from protocols import NYU_METRICS


def test_authors_loop_and_eval_loop_agree(tmp_path, capsys):
    report = bench.run(images=2, device="cpu", precision="fp32", batch_size=2, workers=0, folder=str(tmp_path),
                       repeats=1, geometry={})  # make_checkpoint's small default geometry, not the full RN50
    assert max(report["largest_difference_from_authors_loop"].values()) < 1e-5
    assert set(report["metrics"]) == set(NYU_METRICS)
    assert report["trunk_gflop_per_image_pass"] > 0 and report["eval_process_peak_rss_mib"] > 0
    for loop in ("authors_loop", "eval_loop"):
        assert report[loop]["images_per_second"] == 2 / report[loop]["seconds"]
    assert report["playground"]["edit_seconds"]["min"] > 0
    assert report["text_tower"]["positions"] < 77 and report["text_tower"]["speedup"] > 0
    assert "fewer than 3 rounds is not comparable" in capsys.readouterr().err  # repeats=1 is said to be so
    bench.print_report(report)
    assert "speed-up (b)/(a)" in capsys.readouterr().out
