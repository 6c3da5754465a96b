// The C++ user functions of the pair-statistics likelihoods (USER_HEADER of a program that declares only these;
// scribe_cli/cache.py): the rising-factorial table and the per-gene NB / ZINB terms from logit p.
#ifndef SCRIBE_PAIRS_HPP
#define SCRIBE_PAIRS_HPP

#include "logit_gene_sum.hpp"
#include "rise_sum.hpp"

#endif  // SCRIBE_PAIRS_HPP
