// The C++ user functions of the pair-statistics likelihoods (USER_HEADER of a program that declares only these;
// scribe_cli/cache.py): the rising-factorial table, the per-gene NB / ZINB terms from logit p and the ZINB gates
// summed out on a grid.
#ifndef SCRIBE_PAIRS_HPP
#define SCRIBE_PAIRS_HPP

#include "gate_quadrature.hpp"
#include "logit_gene_sum.hpp"
#include "rise_sum.hpp"

#endif  // SCRIBE_PAIRS_HPP
