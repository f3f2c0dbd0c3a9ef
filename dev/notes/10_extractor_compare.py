"""Phase-3 draft for chapter 10: which extractor should the teacher use?
Cross-style emoji retrieval with frozen features (no training), the cost of
each extractor (round-robin latency, FLOPs), and cached tokens."""
import time
import torch
import torch.nn.functional as F
from lightkd import bench, extractors as ex, vldata

torch.set_num_threads(1)
d = vldata.load_emoji(held_out="style", size=64)
n = 1870
noto, google = d.train.images[:n], d.train.images[n:]
twitter = torch.cat([d.dev.images, d.test.images])
tw_labels = torch.cat([d.dev.labels, d.test.labels])
pick = torch.arange(0, n, 3)                     # 624 emoji: every third, in Unicode order
sub = {"noto": noto[pick], "google": google[pick], "twitter": twitter[torch.argsort(tw_labels)][pick]}
groups = [d.train.groups[i] for i in pick.tolist()]

configs = [("mobilenet_v2", 128, None), ("mobilenet_v2", 224, None), ("efficientnet_lite0", 128, None),
           ("efficientnet_lite0", 224, None), ("dinov2_small", 112, None), ("dinov2_small", 224, None)]
for name, size, upto in configs:
    feats, secs = {}, 0.0
    for style, x in sub.items():
        t = time.perf_counter()
        tok = ex.cached_tokens(name, x, data=f"emoji-{style}-64-every3", image_size=size, upto=upto, batch_size=16)
        secs += time.perf_counter() - t
        feats[style] = F.normalize(tok.mean(1), dim=-1)
    out = []
    for query in ("twitter", "google"):
        sim = feats[query] @ feats["noto"].T
        top = sim.topk(5, dim=1).indices
        target = torch.arange(len(pick))[:, None]
        r1 = (top[:, :1] == target).float().mean().item()
        r5 = (top == target).any(1).float().mean().item()
        grp = sum(groups[j] == groups[i] for i, j in enumerate(top[:, 0].tolist())) / len(pick)
        out.append(f"{query}->noto R@1 {r1:.3f} R@5 {r5:.3f} group@1 {grp:.3f}")
    print(f"{name:19s} {size:4d} tokens {tuple(tok.shape[1:])}  {' | '.join(out)}  (encode {secs:.0f} s for {3 * len(pick)} pictures)", flush=True)

# cost, round robin on one thread
for size_cnn, size_vit in ((128, 112), (224, 224)):
    models = {"mobilenet_v2": ex.load_extractor("mobilenet_v2", size_cnn),
              "efficientnet_lite0": ex.load_extractor("efficientnet_lite0", size_cnn),
              "dinov2_small": ex.load_extractor("dinov2_small", size_vit)}
    for batch in (1, 32):
        x = torch.rand(batch, 3, 64, 64)
        res = bench.compare_latency(models, x, rounds=5 if batch == 32 else 9, warmup=1, num_threads=1)
        flops = {k: bench.flops(m, x[:1]) / 1e6 for k, m in models.items()}
        print(f"sizes {size_cnn}/{size_vit} batch {batch}: " + "; ".join(
            f"{k} {r.median_ms / batch:.1f} ms/img ({flops[k]:.0f} MFLOPs, x{r.speedup:.2f} vs mobilenet)" for k, r in res.items()), flush=True)
