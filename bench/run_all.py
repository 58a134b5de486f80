"""Run every benchmark in turn (`make bench`); each writes bench/results/<name>.json."""

from bench import bench_compile, bench_compression, bench_finetune, bench_lava, bench_quantization, bench_simulator


def main() -> None:
    for module in (bench_compile, bench_simulator, bench_lava, bench_quantization, bench_compression, bench_finetune):
        print(f"== {module.__name__}")
        module.main()


if __name__ == "__main__":
    main()
