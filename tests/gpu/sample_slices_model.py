#!/usr/bin/env python3
"""The selection logic of kernels/cuda/cuda_sample_slices.cu on the host, against the
reference's definition of the kept set and the draw (docs/SAMPLING.md): for random rows (ties
included; draws at both ends of the kept mass among them) and mixes of top-k, top-p and min-p, the pick the slice algorithm makes (two radix
selections side by side over four 8-bit passes, the kept prefix from both, the last kept tie
and the draw found slice by slice) must equal the pick of the plain definition (sort by p
descending then id, cut, draw in ascending id order). Float32 p values and 32.32 fixed-point
masses as the kernels compute them (exp here is not CUDA's expf: both sides use the same p).
It checks the algorithm, not the CUDA code (tests/gpu/test_cuda_sample.c does that on a GPU).
Run by hand after changing the algorithm: python3 tests/gpu/sample_slices_model.py
Exits non-zero on a mismatch."""
import sys
import math, random, struct
def f32(v): return struct.unpack('f', struct.pack('f', v))[0]
def fromkey(k): return struct.unpack('f', struct.pack('I', k))[0]
SL=4096
def fixq(p): return int(round(p*4294967296.0))
def key(p): return struct.unpack('I', struct.pack('f', p))[0]
def ref(x, topk, topp, minp, u):
    V=len(x); m=max(v for v in x if not math.isnan(v))
    p=[0.0 if math.isnan(v) else f32(math.exp(f32(v-m))) for v in x]
    q=[fixq(v) for v in p]; zq=sum(q)
    order=sorted(range(V), key=lambda i:(-key(p[i]), i))
    n=topk if 0<topk<V else V
    nmin=sum(1 for v in p if not (minp>0 and v<minp)); n=min(n,nmin)
    if topp<1:
        target=max(1,math.ceil(topp*zq)); acc=0
        for r,i in enumerate(order):
            acc+=q[i]
            if acc>=target: n=min(n,r+1); break
    kept=sorted(order[:n]); tot=sum(q[i] for i in kept); rr=u*tot; acc=0
    for i in kept:
        acc+=q[i]
        if rr<acc: return i
    return kept[-1]
def walk(w,cnt,target):
    acc=0;cacc=0
    for b in range(255,-1,-1):
        if b==0 or acc+w[b]>=target: return b,acc,cacc
        acc+=w[b]; cacc+=cnt[b] if cnt else 0
def sim(x, topk, topp, minp, u):
    V=len(x); S=(V+SL-1)//SL
    m=max(v for v in x if not math.isnan(v))
    p=[0.0 if math.isnan(v) else f32(math.exp(f32(v-m))) for v in x]
    keys=[key(v) for v in p]; q=[fixq(v) for v in p]
    zq=sum(q); nmin=sum(1 for v in p if not (minp>0 and v<minp))
    n0=topk if 0<topk<V else V; n0=min(n0,nmin)
    mass_on=topp<1
    pre=[0,0]; tgt=[max(1,math.ceil(topp*zq)) if mass_on else 0, n0]; above=[0,0]; cab=0; t0=tgt[0]
    for ps in range(4):
        sh=24-8*ps; mask=(0xffffffff<<(32-8*ps))&0xffffffff if ps else 0
        wm=[0]*256; cm=[0]*256; cc=[0]*256
        for i in range(V):
            k=keys[i]; b=(k>>sh)&255
            if mass_on and (k&mask)==pre[0]: wm[b]+=q[i]; cm[b]+=1
            if (k&mask)==pre[1]: cc[b]+=1
        if mass_on:
            b,a,c=walk(wm,cm,tgt[0]); tgt[0]-=a; above[0]+=a; cab+=c; pre[0]|=b<<sh
        b,a,c=walk(cc,None,tgt[1]); tgt[1]-=a; above[1]+=a; pre[1]|=b<<sh
    n=n0; K=pre[1]; need=n-above[1]
    if mass_on:
        Kp=pre[0]; qk=fixq(fromkey(Kp)); ties=(t0-above[0]+qk-1)//qk if qk else 1
        if cab+ties<n: n=cab+ties; K=Kp; need=ties
    # draw via slices
    tiesS=[sum(1 for i in range(s*SL,min(V,(s+1)*SL)) if keys[i]==K) for s in range(S)]
    massS=[sum(q[i] for i in range(s*SL,min(V,(s+1)*SL)) if keys[i]>K) for s in range(S)]
    lastS=[max([i for i in range(s*SL,min(V,(s+1)*SL)) if keys[i]>K],default=-1) for s in range(S)]
    before=0; ts=0
    while ts<S-1 and not before+tiesS[ts]>=need: before+=tiesS[ts]; ts+=1
    tie_last=V; k=before
    for i in range(ts*SL,min(V,(ts+1)*SL)):
        if keys[i]==K:
            k+=1
            if k==need: tie_last=i; break
    qk=fixq(fromkey(K))
    kept=sum(massS)+need*qk; rr=u*kept
    last_kept=max([tie_last if tie_last<V else -1]+lastS)
    mb=0; tb=0
    for s in range(S):
        tk=0 if tb>=need else min(need-tb,tiesS[s]); ks=massS[s]+tk*qk; tb+=tiesS[s]
        if ks>0 and mb<=rr<mb+ks:
            acc=mb
            for i in range(s*SL,min(V,(s+1)*SL)):
                if keys[i]>K or (keys[i]==K and i<=tie_last):
                    acc+=q[i]
                    if rr<acc: return i
            break
        mb+=ks
    return last_kept
random.seed(1); bad=0
for trial in range(150):
    V=random.choice([1000,5000,9000,12289])
    tiesmode=random.random()<0.4
    x=[f32(round(random.gauss(0,3)) if tiesmode else random.gauss(0,3)) for _ in range(V)]
    topk=random.choice([0,1,40,50,1000,V]); topp=random.choice([1.0,0.9,0.5,0.3,0.999]); minp=random.choice([0,0.02,0.05,0.001])
    u=random.choice([random.random(), random.random(), 0.0, 0.9999999])   # the ends reach the last kept ids
    a=ref(x,topk,topp,minp,u); b=sim(x,topk,topp,minp,u)
    if a!=b: bad+=1; print("MISMATCH",V,tiesmode,topk,topp,minp,u,a,b)
print("mismatches:", bad, "of 150 rows")
sys.exit(1 if bad else 0)
