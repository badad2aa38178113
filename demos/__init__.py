"""Demonstration producers: everything that makes or converts demonstrations, between the environments (envs/)
and the data (datasets/), so that neither of those imports the other.

    python -m demos.pusht --episodes 200 --output data/pusht_scripted.zarr      # scripted Push-T demonstrations
    python -m demos.pusht_teleop --output data/pusht_human.zarr                  # push the T with the mouse
    python -m demos.pusht_replay --dataset pusht.zip                             # replay fidelity of a dataset
    python -m demos.robomimic lift --episodes 200 --out lift.hdf5                # scripted Lift / Can / Square,
                                                                                 # written by robomimic's scripts
    python -m demos.robomimic_hdf5 convert lift.hdf5 lift.zarr [--abs-action]    # robomimic hdf5 -> zarr
"""
