"""`hwmatrix bisect`: the search (search.py), the lab that builds and measures for it (lab.py), its inputs, its report."""
