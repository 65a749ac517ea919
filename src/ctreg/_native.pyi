# Type stub of the pybind11 extension (cpp/bindings/): its functions take and return numpy
# arrays and Python numbers; ctreg.ops is its only caller and checks every argument.
from typing import Any

def __getattr__(name: str) -> Any: ...
