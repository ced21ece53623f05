"""drf-spectacular AutoSchema with operation ids taken from the APIView that implements the method:
``JobCreateApi.post`` -> ``job_create`` (collection views combine a list and a create view)."""

import re

from drf_spectacular.openapi import AutoSchema as _AutoSchema


class AutoSchema(_AutoSchema):
    def get_operation_id(self):
        method = self.method.lower()
        for klass in type(self.view).__mro__:
            if method in vars(klass) and klass.__name__.endswith("Api"):
                name = klass.__name__.removesuffix("Api")
                return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        return super().get_operation_id()
