#!/usr/bin/env python3
"""Offline `sam validate`: expand the SAM transform of infra/template.yaml with the AWS SAM
translator (the library `sam validate` and CloudFormation use) and write the resulting plain
CloudFormation template, so cfn-lint and checkov can check what will really be deployed.

Usage: sam_translate.py TEMPLATE OUT.json

No AWS call is made: the template uses its own IAM roles, so no managed-policy lookup is
needed (the loader below fails loudly if that ever changes).
"""

import json
import os
import sys

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from samtranslator.model.exceptions import InvalidDocumentException  # noqa: E402
from samtranslator.translator.transform import transform  # noqa: E402
from samtranslator.yaml_helper import yaml_parse  # noqa: E402


class NoManagedPolicies:
    """SAM asks for the managed policy map only when a function uses `Policies` with names."""

    def load(self):
        raise SystemExit(
            "the template asks SAM for AWS managed policies; give the function its own role "
            "(least privilege) instead"
        )


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, out = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    # As `sam validate` does: a local CodeUri is packaged to S3 only at deploy time.
    for name, res in template.get("Resources", {}).items():
        if res.get("Type") == "AWS::Serverless::Function":
            props = res.setdefault("Properties", {})
            code = props.get("CodeUri", template.get("Globals", {}).get("Function", {}).get("CodeUri"))
            if isinstance(code, str) and not code.startswith("s3://"):
                props["CodeUri"] = f"s3://deploy-bucket/{name}.zip"
    try:
        cfn = transform(template, {}, NoManagedPolicies())
    except InvalidDocumentException as e:
        for cause in e.causes:
            print(f"{src}: {cause.message}", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(cfn, f, indent=1, sort_keys=True)
    kinds = sorted({r["Type"] for r in cfn.get("Resources", {}).values()})
    print(f"{src}: SAM transform OK -> {out} ({len(cfn['Resources'])} resources: {', '.join(kinds)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
