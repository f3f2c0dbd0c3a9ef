"""Phase-3 measurement for chapter 10: extractor time per image (1 thread), FLOPs, tokens."""
import torch
from lightkd import bench, extractors as ex

rows = []
for name in ex.EXTRACTORS:
    backbone = ex.load_backbone(name)
    params = bench.count_params(backbone)
    for size in (224, 128, 64):
        for upto in (None, ex.STRIDE16_UPTO[name]):
            e = ex.ImageExtractor(backbone, image_size=size, upto=upto)
            x1 = torch.rand(1, 3, size, size)
            tokens = e(x1).shape[1:]
            fl = bench.flops(e, x1)
            t1 = bench.latency(e, x1, repeats=15, warmup=3, num_threads=1).median_ms
            t32 = bench.latency(e, torch.rand(32, 3, size, size), repeats=3, warmup=1, num_threads=1).median_ms / 32
            rows.append((name, size, "final" if upto is None else "stride16", tuple(tokens), fl / 1e6, t1, t32))
            print(f"{name:19s} {size:4d} {rows[-1][2]:9s} tokens {str(tuple(tokens)):12s} {fl/1e6:8.1f} MFLOPs"
                  f"  b1 {t1:7.2f} ms/img  b32 {t32:7.2f} ms/img  params {params/1e6:.2f}M", flush=True)
