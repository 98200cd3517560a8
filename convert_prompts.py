"""Convert a PromptLearningCLIP-MDE checkpoint (Auty & Mikolajczyk 2023) into this repository's prompts file.

    python convert_prompts.py RUN.ckpt PARAMS.yaml -o learned.safetensors [--clip_model RN50]

RUN.ckpt is their PyTorch Lightning checkpoint, PARAMS.yaml the params file it was trained with (their
params/*.yaml). The .safetensors holds the learned tokens, CLIP's BatchNorm statistics as their training left them,
the layout, bins and temperature, and the SHA256 of the CLIP weights it belongs to (--clip_model; default: the
backbone their params name), so that eval.py, predict.py and demo.py --prompts use it with the right weights.
"""
import cli
import learned_prompts
import options
from clip_runtime import FrozenCLIP


def main(argv=None):
    p = options.parser("convert_prompts.py", __doc__.splitlines()[0])
    p.add_argument("checkpoint", help="their .ckpt")
    p.add_argument("params", help="the params YAML it was trained with")
    options.flag(p, "--output", "-o", required=True, what="the .safetensors")
    options.flag(p, "--clip_model", default=None, what="the weights the tokens belong to (default: the params' "
                 "depthclip.clip)")
    options.flag(p, "--debug")
    args = p.parse_args(argv)
    prompts = learned_prompts.from_auty(args.checkpoint, args.params)
    backbone = args.clip_model or prompts.source["backbone"]
    sha = learned_prompts.backbone_sha256(backbone)
    if sha is None:
        raise ValueError(f"the CLIP weights {backbone} are neither a released model's name nor a file here; pass "
                         f"--clip_model with the checkpoint the tokens were trained on")
    width = FrozenCLIP(backbone, "cpu").model.token_embedding.weight.shape[1]  # refuse tokens that cannot fit
    if prompts.width not in (None, width):
        raise ValueError(f"the checkpoint's tokens are {prompts.width}-d, the text tower of {backbone} reads "
                         f"{width}-d; give the --clip_model they were trained on")
    prompts.save(args.output, backbone, sha, {"converted_from": prompts.source["file"]})
    print(f"{args.output} written ({cli.size_of(args.output)}): {prompts.depth_count} depth tokens, template "
          f"{prompts.template!r}, BatchNorm statistics {'from the checkpoint' if prompts.visual_state else 'CLIP'}'s")


if __name__ == "__main__":
    cli.run(main)
