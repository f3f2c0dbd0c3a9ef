import time, os, sys, torch, numpy as np
torch.set_num_threads(1)
T0=time.time()
from lightkd import data, extractors, zoo, train, vlm
from lightkd.common import set_seed
def tick(msg): print(f"[{time.time()-T0:6.1f}s] {msg}", flush=True)
vqa = data.load_vqa()
N_TR_IMG, N_TE_IMG = 500, 100
tr, te = vqa.train, vqa.test
tr_imgs, te_imgs = tr.images[:N_TR_IMG], te.images[:N_TE_IMG]
trq = (tr.image_index < N_TR_IMG).nonzero().squeeze(1); teq = (te.image_index < N_TE_IMG).nonzero().squeeze(1)
tick(f"data {len(trq)} train q, {len(teq)} test q")
T_tr = extractors.cached_tokens("efficientnet_lite0", tr_imgs, data="easyvqa-train", image_size=128)
T_te = extractors.cached_tokens("efficientnet_lite0", te.images[:200], data="easyvqa-test", image_size=128)[:N_TE_IMG]
S_tr = extractors.cached_tokens("mobilenet_v2", tr_imgs, data="easyvqa-train", image_size=64)
S_te = extractors.cached_tokens("mobilenet_v2", te.images[:200], data="easyvqa-test", image_size=64)[:N_TE_IMG]
tok = zoo.load_tokenizer("minilm-l6")
q_tr = vlm.encode_questions(tok, [tr.questions[i] for i in trq]); q_te = vlm.encode_questions(tok, [te.questions[i] for i in teq])
y_tr, y_te = tr.answers[trq], te.answers[teq]
ii_tr, ii_te = tr.image_index[trq], te.image_index[teq]
def batches(vis, ii, q, y, n=None, shuffle=False, seed=0, targets=None, bs=32):
    sl = slice(None) if n is None else slice(0, n)
    return vlm.VQABatches(vis, ii[sl], q["input_ids"][sl], q["attention_mask"][sl], y[sl], batch_size=bs, shuffle=shuffle, seed=seed, targets=targets)
def opt(m, lr, lr_new):
    new = [p for n,p in m.named_parameters() if n.startswith(("visual_", "box_", "head"))]
    old = [p for n,p in m.named_parameters() if not n.startswith(("visual_", "box_", "head"))]
    return torch.optim.AdamW([{"params": old, "lr": lr}, {"params": new, "lr": lr_new}], weight_decay=0.01)
bert = zoo.load_pretrained("minilm-l6")
ev = lambda m, vis: train.evaluate(m, batches(vis, ii_te, q_te, y_te, bs=128))["accuracy"]
STEPS=int(os.environ.get("TSTEPS", 40))
set_seed(0)
teacher = vlm.FusionVLM.from_bert(bert, 1280, vqa.num_answers)
tb = batches(T_tr, ii_tr, q_tr, y_tr, shuffle=True)
r = train.fit(teacher, tb, max_steps=STEPS, optimizer=opt(teacher, 1e-4, 1e-3), loss=vlm.arm_loss("labels"), progress=False)
tick(f"teacher trained {r.steps} steps")
tick(f"teacher acc own {ev(teacher, T_te):.4f}")
tick(f"teacher acc pooled 2x2 {ev(teacher, vlm.pool_tokens(T_te, 2)):.4f}")
NS = 640
for ep in [3]:
    set_seed(1)
    st = vlm.minivlm_student(teacher, 1280, 2)
    sb = batches(S_tr, ii_tr, q_tr, y_tr, n=NS, shuffle=True, seed=1)
    r = train.fit(st, sb, epochs=ep, optimizer=opt(st, 1e-4, 1e-3), loss=vlm.arm_loss("labels"), progress=False)
    tick(f"student labels {ep} ep acc {ev(st, S_te):.4f}")
    for mode, vis in [("aligned", vlm.pool_tokens(T_tr, 2)), ("unaligned", T_tr)]:
        tb2 = batches(vis, ii_tr, q_tr, y_tr, n=NS, bs=64)
        tg = vlm.teacher_targets(teacher, tb2, 4, [3, 6])
        tick(f"targets {mode}")
        set_seed(1)
        st = vlm.minivlm_student(teacher, 1280, 2)
        sb = batches(S_tr, ii_tr, q_tr, y_tr, n=NS, shuffle=True, seed=1, targets=tg)
        r = train.fit(st, sb, epochs=ep, optimizer=opt(st, 1e-4, 1e-3), loss=vlm.arm_loss(mode), progress=False)
        print(r.history[-1])
        tick(f"student {mode} {ep} ep acc {ev(st, S_te):.4f}")
