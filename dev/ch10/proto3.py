import time, os, sys, torch, numpy as np
torch.set_num_threads(1)
T0=time.time()
from lightkd import data, extractors, zoo, train, vlm
from lightkd.common import set_seed
def tick(msg): print(f"[{time.time()-T0:6.1f}s] {msg}", flush=True)
vqa = data.load_vqa()
tr, te = vqa.train, vqa.test
trq = (tr.image_index < 500).nonzero().squeeze(1); teq = (te.image_index < 100).nonzero().squeeze(1)
T_tr, _ = vlm.pyramid_tokens("efficientnet_lite0", tr.images[:500], data="easyvqa-train", image_size=128, grid=4)
T_te, _ = vlm.pyramid_tokens("efficientnet_lite0", te.images[:100], data="easyvqa-test", image_size=128, grid=4)
tok = zoo.load_tokenizer("minilm-l6")
q_tr = vlm.encode_questions(tok, [tr.questions[i] for i in trq]); q_te = vlm.encode_questions(tok, [te.questions[i] for i in teq])
y_tr, y_te = tr.answers[trq], te.answers[teq]
ii_tr, ii_te = tr.image_index[trq], te.image_index[teq]
qtype = np.array([("color" if q.startswith("what color") else "shape" if q.startswith("what") else "yesno") for q in (te.questions[i] for i in teq)])
def batches(vis, ii, q, y, n=None, shuffle=False, seed=0, targets=None, bs=32):
    sl = slice(None) if n is None else slice(0, n)
    return vlm.VQABatches(vis, ii[sl], q["input_ids"][sl], q["attention_mask"][sl], y[sl], batch_size=bs, shuffle=shuffle, seed=seed, targets=targets)
def opt(m, lr, lr_new):
    new = [p for n,p in m.named_parameters() if n.startswith(("visual_", "box_", "head"))]
    old = [p for n,p in m.named_parameters() if not n.startswith(("visual_", "box_", "head"))]
    return torch.optim.AdamW([{"params": old, "lr": lr}, {"params": new, "lr": lr_new}], weight_decay=0.01)
bert = zoo.load_pretrained("minilm-l6")
for lr, bs, steps in [(1e-4, 16, 80)]:
    set_seed(0)
    teacher = vlm.FusionVLM.from_bert(bert, T_tr.shape[-1], vqa.num_answers)
    r = train.fit(teacher, batches(T_tr, ii_tr, q_tr, y_tr, shuffle=True, bs=bs), max_steps=steps, optimizer=opt(teacher, lr, 10*lr), loss=vlm.arm_loss("labels"), progress=False)
    print([round(h["ce"],3) for h in r.history])
    e = train.evaluate(teacher, batches(T_te, ii_te, q_te, y_te, bs=128))
    c = (e["predictions"]==e["labels"]).numpy()
    tick(f"lr {lr} bs {bs} acc {c.mean():.4f} " + " ".join(f"{t} {c[qtype==t].mean():.3f}" for t in ("color","shape","yesno")))
