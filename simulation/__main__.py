"""`python -m simulation`: the whole service on one machine (simulation/localstack.py)."""

from simulation.localstack import main

if __name__ == "__main__":
    main()
