import time, torch, numpy as np, re
torch.set_num_threads(1)
from lightkd import data, extractors
from sklearn.linear_model import LogisticRegression
vqa = data.load_vqa(); tr=vqa.train
N=600
# per-image color and shape from the questions
color=-np.ones(N,int); shape=-np.ones(N,int)
for q,a,i in zip(tr.questions, tr.answers.tolist(), tr.image_index.tolist()):
    if i>=N: continue
    if q.startswith("what color"): color[i]=a
    if q.startswith("what shape") or q.startswith("what is the"): shape[i]=a
print("have color",(color>=0).sum(),"shape",(shape>=0).sum())
imgs=tr.images[:N]
cfgs=[("efficientnet_lite0",128,None,None),("mobilenet_v2",64,None,None),("efficientnet_lite0",128,12,4),("mobilenet_v2",64,14,2),("mobilenet_v2",64,14,None),("efficientnet_lite0",64,12,None)]
for name,size,upto,grid in cfgs:
    t=time.time()
    tok=extractors.cached_tokens(name,imgs,data="easyvqa-train-probe",image_size=size,upto=upto,grid=grid)
    dt=time.time()-t
    f=tok.reshape(N,-1).numpy()
    f=(f-f.mean(0))/(f.std(0)+1e-6)
    res=[]
    for lab in (color,shape):
        ok=lab>=0; X=f[ok]; y=lab[ok]; n=len(y)*2//3
        clf=LogisticRegression(max_iter=300,C=0.1).fit(X[:n],y[:n]); res.append(clf.score(X[n:],y[n:]))
    print(name,size,upto,grid,tuple(tok.shape),f"{dt:.1f}s","color %.3f shape %.3f"%tuple(res),flush=True)
