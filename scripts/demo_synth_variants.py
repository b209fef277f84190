#!/usr/bin/env python3
"""Prototype data for the demo: a numpy port of src/demo/synth.rs's extent task with the opacity
radii and brightness as arguments, plus a "diffuse" variant (DIFFUSE=l0,l1,l2,l3 in the
environment: both lung fields brightened by a per-class level instead of one focal opacity), so
scripts/demo_probe.py can test what a tiny VLM can read before changing the Rust generator.

    /work/venv/bin/python scripts/demo_synth_variants.py OUT_DIR R0,R1,R2,R3 BMIN,BMAX
    DIFFUSE=0,25,50,75 /work/venv/bin/python scripts/demo_synth_variants.py OUT_DIR 0,0.12,0.2,0.3 110,140

Writes OUT_DIR/train.json (256 questions), val.json (64) and images/, in the reader's format
(fixed option order A. None .. D. Large, answer uniform). Not bit-identical to the Rust
generator (numpy RNG), same distributions.
"""
import json, os, sys, numpy as np
DIFFUSE=[float(x) for x in os.environ['DIFFUSE'].split(',')] if os.environ.get('DIFFUSE') else None
from PIL import Image
ZONES=[("right upper zone",.30,.35),("right lower zone",.30,.68),("left upper zone",.70,.35),("left lower zone",.70,.68)]
def gen(out, split, n, size, seed, radii, bright, noise=8.0):
    os.makedirs(out+"/images", exist_ok=True)
    rng=np.random.default_rng(seed + (0 if split=="train" else 999))
    d={}
    for i in range(n):
        zone=rng.integers(4); e=rng.integers(4)
        r=radii[e]*rng.uniform(.9,1.1); s=size
        zx,zy=ZONES[zone][1:]
        ox=(zx+rng.uniform(-.06,.06))*s; oy=(zy+rng.uniform(-.06,.06))*s
        rad=max(r*s,1e-3); b=rng.uniform(*bright) if rad>1e-3 else 0
        ph=rng.uniform(0,6.283)
        y,x=np.mgrid[0:s,0:s].astype(np.float32); u=x/s; v=y/s
        g=np.full((s,s),150.0)
        for cx in (.3,.7):
            dd=((u-cx)/.18)**2+((v-.52)/.32)**2
            g-=np.where(dd<1,95*np.sqrt(np.clip(1-dd,0,None)),0)
        g+=12*np.maximum(np.sin(v*40+ph)*(1-np.abs(u-.5)*2),0)
        g+=b*np.exp(-((x-ox)**2+(y-oy)**2)/rad**2) if not DIFFUSE else 0
        if DIFFUSE:
            lvl=DIFFUSE[e]*rng.uniform(.85,1.15)
            for cx in (.3,.7):
                dd=((u-cx)/.18)**2+((v-.52)/.32)**2
                g+=np.where(dd<1,lvl,0)
        g+=rng.uniform(-noise,noise,(s,s))
        img=np.clip(g,0,255).astype(np.uint8)
        idn=f"demo-{split}-{i:05}"; Image.fromarray(img).save(f"{out}/images/{idn}.png")
        d[idn]={"question":"How large is the focal opacity on this chest radiograph?","options":["A. None","B. Small","C. Moderate","D. Large"],"correct_answer":"ABCD"[e],"ImagePath":[f"images/{idn}.png"]}
    json.dump(d,open(f"{out}/{split}.json","w"))
out=sys.argv[1]; radii=[float(x) for x in sys.argv[2].split(",")]; bright=[float(x) for x in sys.argv[3].split(",")]
gen(out,"train",256,64,7,radii,bright); gen(out,"val",64,64,7,radii,bright)
