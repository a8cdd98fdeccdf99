"""lmm_jax: linear mixed models (ML/REML with lme4's semantics) on JAX."""

from . import _config  # noqa: F401  (enables float64)
from . import datasets as datasets
from .anova_estimators import anova_estimates as anova_estimates
from .anova_estimators import anova_start as anova_start
from .api import fit as fit
from .batch import BatchResult as BatchResult
from .batch import fit_batch as fit_batch
from .compare import compare as compare
from .compilation_cache import disable_compilation_cache as disable_compilation_cache
from .compilation_cache import enable_compilation_cache as enable_compilation_cache
from .exact_f import exact_f_test as exact_f_test
from .fay_herriot import fay_herriot as fay_herriot
from .covariance_structures import AutoRegressive as AutoRegressive
from .covariance_structures import CompoundSymmetry as CompoundSymmetry
from .covariance_structures import Diagonal as Diagonal
from .covariance_structures import HomogeneousCompoundSymmetry as HomogeneousCompoundSymmetry
from .covariance_structures import Toeplitz as Toeplitz
from .custom_structures import register_structure as register_structure
from .custom_structures import structure_from_function as structure_from_function
from .design import DataError as DataError
from .formula import FormulaError as FormulaError
from .lrt import lrt as lrt
from .model import FitParams as FitParams
from .model import Model as Model
from .results import FitResult as FitResult
from .rlrt import rlrt as rlrt
from .structure_report import structure_parameter_se as structure_parameter_se
from .structures import CholeskyFactor as CholeskyFactor
from .structures import CovarianceStructure as CovarianceStructure

from .compilation_cache import enable_by_default as _enable_cache_by_default

__version__ = "0.1.0"
_enable_cache_by_default()  # compiled programs kept across processes: compilation_cache.py
