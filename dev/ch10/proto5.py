import time, os, sys, torch, numpy as np
torch.set_num_threads(1)
T0=time.time()
from lightkd import data, extractors, zoo, train, vlm, results
from lightkd.common import set_seed
def tick(msg): print(f"[{time.time()-T0:6.1f}s] {msg}", flush=True)
vqa = data.load_vqa()
tr, te = vqa.train, vqa.test
trq = (tr.image_index < 500).nonzero().squeeze(1); teq = (te.image_index < 100).nonzero().squeeze(1)
T_tr, _ = vlm.pyramid_tokens("efficientnet_lite0", tr.images[:500], data="easyvqa-train", image_size=128, grid=4)
T_te, _ = vlm.pyramid_tokens("efficientnet_lite0", te.images[:100], data="easyvqa-test", image_size=128, grid=4)
S_tr, _ = vlm.pyramid_tokens("mobilenet_v2", tr.images[:500], data="easyvqa-train", image_size=64, grid=2)
S_te, _ = vlm.pyramid_tokens("mobilenet_v2", te.images[:100], data="easyvqa-test", image_size=64, grid=2)
tok = zoo.load_tokenizer("minilm-l6")
q_tr = vlm.encode_questions(tok, [tr.questions[i] for i in trq]); q_te = vlm.encode_questions(tok, [te.questions[i] for i in teq])
y_tr, y_te = tr.answers[trq], te.answers[teq]
ii_tr, ii_te = tr.image_index[trq], te.image_index[teq]
def batches(vis, ii, q, y, n=None, shuffle=False, seed=0, targets=None, bs=32):
    sl = slice(None) if n is None else slice(0, n)
    return vlm.VQABatches(vis, ii[sl], q["input_ids"][sl], q["attention_mask"][sl], y[sl], batch_size=bs, shuffle=shuffle, seed=seed, targets=targets)
def opt(m, lr, lr_new):
    new = [p for n,p in m.named_parameters() if p.requires_grad and n.startswith(("visual_", "box_", "head"))]
    old = [p for n,p in m.named_parameters() if p.requires_grad and not n.startswith(("visual_", "box_", "head"))]
    return torch.optim.AdamW([{"params": old, "lr": lr}, {"params": new, "lr": lr_new}], weight_decay=0.01)
bert = zoo.load_pretrained("minilm-l6")
TSTEPS=100
def make_t(): return vlm.FusionVLM.from_bert(bert, T_tr.shape[-1], vqa.num_answers)
teacher = zoo.cached("ch10proto-teacher", {"steps": TSTEPS, "v": 1}, make_t, None)
ev = lambda m, vis: (lambda e: (e["predictions"]==e["labels"]).numpy())(train.evaluate(m, batches(vis, ii_te, q_te, y_te, bs=128), bf16=False))
NS=int(os.environ.get("NS", 640)); NL=int(os.environ.get("NL", 160)); STEPS=int(os.environ.get("STEPS", 100)); LRS=float(os.environ.get("LRS", 1e-4))
W = dict(kd=1.0, hidden=float(os.environ.get("WH", 1.0)), attention=float(os.environ.get("WA", 1.0)))
y_semi = y_tr.clone(); y_semi[NL:] = vlm.UNLABELLED
tg = {}
for mode, vis in [("aligned", vlm.pool_tokens(T_tr, 2)), ("unaligned", T_tr)]:
    tg[mode] = vlm.teacher_targets(teacher, batches(vis, ii_tr, q_tr, y_tr, n=NS, bs=64), 4, [3, 6])
tick("targets")
res = {}
for seed in [1, 2][:int(os.environ.get("SEEDS", 1))]:
  for mode in ["labels", "unaligned", "aligned"]:
    set_seed(seed)
    st = vlm.minivlm_from_pretrained(bert, S_tr.shape[-1], vqa.num_answers, 2)
    st.word.weight.requires_grad_(False)
    if mode == "labels":
        sb = batches(S_tr, ii_tr, q_tr, y_tr, n=NL, shuffle=True, seed=seed, bs=16)
    else:
        sb = batches(S_tr, ii_tr, q_tr, y_semi, n=NS, shuffle=True, seed=seed, targets=tg.get(mode), bs=16)
    r = train.fit(st, sb, max_steps=STEPS, optimizer=opt(st, LRS, 10*LRS), loss=vlm.arm_loss(mode, **({} if mode=="labels" else W)), progress=False, seed=seed, bf16=False)
    c = ev(st, S_te); res.setdefault(mode, []).append(c)
    tick(f"seed {seed} {mode} acc {c.mean():.4f} last {r.history[-1]}")
for m in ["unaligned", "aligned"]:
    print(m, "- labels", results.bootstrap_interval(np.stack(res[m]), np.stack(res["labels"])))
print("aligned - unaligned", results.bootstrap_interval(np.stack(res["aligned"]), np.stack(res["unaligned"])))
